// Microsoft's azure-iothub service SDK, driven by interop_test.go. The service connection
// string comes from $IOTHUB_SERVICE_CONNECTION_STRING, the CA from $NODE_EXTRA_CA_CERTS.
//
//   node service.js invoke <deviceId> <moduleId|-> <methodName> <payload JSON> <responseTimeoutInSeconds>
//   node service.js twin-get <deviceId> <moduleId|->
//   node service.js twin-update <deviceId> <moduleId|-> <patch JSON>
//
// Prints one JSON line: {"ok":true,"result":..} or {"ok":false,"name","message","statusCode","body"}.
'use strict';

const { Client, Registry } = require('azure-iothub');

const [cmd, deviceId, moduleArg, ...rest] = process.argv.slice(2);
const moduleId = moduleArg === '-' ? undefined : moduleArg;
const cs = process.env.IOTHUB_SERVICE_CONNECTION_STRING;

function out(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function failure(err) {
  out({
    ok: false,
    name: err && err.constructor && err.constructor.name,
    message: String(err && err.message),
    statusCode: err && err.response && err.response.statusCode,
    body: err && err.responseBody,
  });
}

async function main() {
  switch (cmd) {
    case 'invoke': {
      const [methodName, payload, timeout] = rest;
      const client = Client.fromConnectionString(cs);
      const params = { methodName, payload: JSON.parse(payload), responseTimeoutInSeconds: Number(timeout) };
      const res = moduleId
        ? await client.invokeDeviceMethod(deviceId, moduleId, params)
        : await client.invokeDeviceMethod(deviceId, params);
      out({ ok: true, result: res.result });
      break;
    }
    case 'twin-get': {
      const registry = Registry.fromConnectionString(cs);
      const res = moduleId ? await registry.getModuleTwin(deviceId, moduleId) : await registry.getTwin(deviceId);
      const t = res.responseBody;
      out({ ok: true, result: { etag: t.etag, connectionState: t.connectionState, modelId: t.modelId, properties: t.properties } });
      break;
    }
    case 'twin-update': {
      const registry = Registry.fromConnectionString(cs);
      const got = moduleId ? await registry.getModuleTwin(deviceId, moduleId) : await registry.getTwin(deviceId);
      // Twin.update sends If-Match with the etag just read.
      const res = await got.responseBody.update(JSON.parse(rest[0]));
      out({ ok: true, result: { etag: res.result.etag, desired: res.result.properties.desired } });
      break;
    }
    default:
      throw new Error('unknown command ' + cmd);
  }
}

main().catch(failure);
