// A device or module built on Microsoft's azure-iot-device SDK, driven by interop_test.go.
//
//   node device.js module-env <modelId>          ModuleClient.fromEnvironment (IoT Edge workload mode), MQTT
//   node device.js device-cs  <modelId> [ws]     Client.fromConnectionString($IOTHUB_CONNECTION_STRING), MQTT or MQTT over WebSockets
//
// Methods: "echo" answers 200 with {"echo": <payload>}; "fail" answers 400 {"code":"400"};
// "slow" never answers. After connecting it reads the twin, reports {"ready":true} and prints
// one JSON line per event on stdout: {"event":"ready","desired":{..}}, {"event":"method",..},
// {"event":"desired","delta":{..}}, {"event":"error",..}. It exits when stdin closes.
//
// With TOKEN_VALID_SECONDS (and TOKEN_MARGIN_SECONDS) set, module-env mode builds the
// IotEdgeAuthenticationProvider itself with that token lifetime, so that the SDK renews its
// token (by reconnecting) every TOKEN_VALID_SECONDS - TOKEN_MARGIN_SECONDS seconds.
'use strict';

const http = require('http');
const { Client, ModuleClient, IotEdgeAuthenticationProvider } = require('azure-iot-device');
const { Mqtt, MqttWs } = require('azure-iot-device-mqtt');

const [mode, modelId, transportName] = process.argv.slice(2);
const Transport = transportName === 'ws' ? MqttWs : Mqtt;

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

// trustBundle fetches edgeHub's CA from the workload API. ModuleClient.fromEnvironment does
// this too, but Mqtt.setOptions replaces (not merges) the transport options, so setting the
// model id afterwards drops that CA: pass both together.
function trustBundle() {
  const uri = new URL(process.env.IOTEDGE_WORKLOADURI);
  return new Promise((resolve, reject) => {
    http.get({ socketPath: uri.pathname, path: '/trust-bundle?api-version=2019-11-05' }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => {
        try {
          resolve(JSON.parse(body).certificate);
        } catch (err) {
          reject(err);
        }
      });
    }).on('error', reject);
  });
}

function fail(step, err) {
  emit({ event: 'error', step, message: String(err && err.message), name: err && err.constructor && err.constructor.name });
  process.exit(1);
}

async function main() {
  let client;
  const validSeconds = Number(process.env.TOKEN_VALID_SECONDS || 0);
  if (mode === 'module-env' && validSeconds > 0) {
    // What ModuleClient.fromEnvironment does, with a short token lifetime.
    const auth = new IotEdgeAuthenticationProvider({
      workloadUri: process.env.IOTEDGE_WORKLOADURI,
      deviceId: process.env.IOTEDGE_DEVICEID,
      moduleId: process.env.IOTEDGE_MODULEID,
      iothubHostName: process.env.IOTEDGE_IOTHUBHOSTNAME,
      authScheme: process.env.IOTEDGE_AUTHSCHEME,
      gatewayHostName: process.env.IOTEDGE_GATEWAYHOSTNAME,
      generationId: process.env.IOTEDGE_MODULEGENERATIONID,
    }, validSeconds, Number(process.env.TOKEN_MARGIN_SECONDS || 0));
    auth.on('newTokenAvailable', () => emit({ event: 'token' }));
    client = ModuleClient.fromAuthenticationProvider(auth, Transport);
    await client.setOptions({ ca: await trustBundle() });
  } else if (mode === 'module-env') {
    client = await ModuleClient.fromEnvironment(Transport);
  } else if (mode === 'device-cs') {
    client = Client.fromConnectionString(process.env.IOTHUB_CONNECTION_STRING, Transport);
  } else {
    throw new Error('unknown mode ' + mode);
  }
  client.on('error', (err) => emit({ event: 'error', step: 'client', message: String(err && err.message) }));
  client.on('disconnect', () => emit({ event: 'disconnect' }));
  if (modelId) {
    const options = { modelId };
    if (mode === 'module-env') {
      options.ca = await trustBundle();
    }
    await client.setOptions(options);
  }
  await client.open();

  const onMethod = (client.onDeviceMethod || client.onMethod).bind(client);
  onMethod('echo', (req, res) => {
    emit({ event: 'method', name: req.methodName, payload: req.payload });
    res.send(200, { echo: req.payload }, (err) => err && emit({ event: 'error', step: 'echo', message: err.message }));
  });
  onMethod('fail', (req, res) => {
    emit({ event: 'method', name: req.methodName, payload: req.payload });
    res.send(400, { code: '400', target: 'cam:554', message: 'Local port is not available' });
  });
  onMethod('slow', (req) => emit({ event: 'method', name: req.methodName, payload: req.payload }));

  const twin = await client.getTwin();
  twin.on('properties.desired', (delta) => emit({ event: 'desired', delta }));
  await new Promise((resolve, reject) =>
    twin.properties.reported.update({ ready: true, sdk: 'azure-iot-device' }, (err) => (err ? reject(err) : resolve())));
  emit({ event: 'ready', desired: twin.properties.desired });

  process.stdin.resume();
  process.stdin.on('end', async () => {
    await client.close();
    process.exit(0);
  });
}

main().catch((err) => fail('main', err));
