#!/usr/bin/env bash
# scripts/gen-deployment.sh turns a deployment template into a deployment
# manifest for one platform, like `iotedgedev genconfig` or the VS Code IoT Edge
# extension's "Generate Deployment Manifest":
#
#   scripts/gen-deployment.sh                                   # deployment.template.json, amd64
#   scripts/gen-deployment.sh -p arm64v8                        # -> config/deployment.arm64v8.json
#   scripts/gen-deployment.sh -t deployment.debug.template.json # -> config/deployment.debug.amd64.json
#
# It replaces ${CONTAINER_REGISTRY_*} (from .env or the environment),
# ${MODULES.rtsptunnel} (<registry>/rtsptunnel:<version>-<platform>, version from
# modules/rtsptunnel/module.json) and ${MODULES.rtsptunnel.debug}
# (...-<platform>.debug), turns createOptions objects into the JSON strings IoT
# Edge expects (split into createOptions01... past 512 characters), and fails if
# anything stays unresolved. Deploy the result with
#   az iot edge set-modules --hub-name <hub> --device-id <device> --content config/deployment.amd64.json
# The output holds the registry password: config/ gets a .gitignore.
#
# Options: -t TEMPLATE  -p PLATFORM (amd64, arm32v7, arm64v8)  -e ENVFILE (.env)  -o OUTDIR (config)
set -euo pipefail
cd "$(dirname "$0")/.."

template=deployment.template.json platform=amd64 envfile=.env outdir=config
while getopts "t:p:e:o:h" opt; do
	case $opt in
	t) template=$OPTARG ;;
	p) platform=$OPTARG ;;
	e) envfile=$OPTARG ;;
	o) outdir=$OPTARG ;;
	h) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "see: scripts/gen-deployment.sh -h" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
[ $# -eq 0 ] || { echo "gen-deployment.sh: unexpected argument $1 (see -h)" >&2; exit 2; }
if [ ! -f "$envfile" ] && [ -z "${CONTAINER_REGISTRY_SERVER:-}" ]; then
	echo "gen-deployment.sh: $envfile not found and CONTAINER_REGISTRY_SERVER not set: cp .env.example .env and edit it" >&2
	exit 1
fi
command -v go >/dev/null 2>&1 || { echo "gen-deployment.sh: needs Go (https://go.dev/dl/)" >&2; exit 1; }

# edgetool is the stdlib-only root module: build it as a file, without the workspace.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOWORK=off GOFLAGS=-buildvcs=false go build -o "$tmp/edgetool" scripts/edgetool/main.go
"$tmp/edgetool" genconfig -template "$template" -platform "$platform" -env "$envfile" -out "$outdir"
