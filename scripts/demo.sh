#!/usr/bin/env bash
# scripts/demo.sh runs the whole chain on one machine and plays video through it:
#
#   ffprobe (player) -> relay -> wss -> rtsptunnel module -> camera simulator
#
# with IoT Hub, edgeHub and the workload API played by the embedded emulator
# (tools/edgeemu). It installs what is missing (scripts/setup.sh), builds the
# binaries, and prints a short summary. Flags go to the demo driver; see
#   scripts/demo.sh --help
# e.g. `scripts/demo.sh --camera 192.168.1.20:554 --camera-path /stream1` to
# try your own camera instead of the simulator.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${SKIP_SETUP:-}" = 1 ] || scripts/setup.sh
exec go run ./tests/cmd/demo "$@"
