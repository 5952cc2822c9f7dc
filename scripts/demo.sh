#!/usr/bin/env bash
# scripts/demo.sh runs the whole chain on one machine and plays video through it:
#
#   ffprobe (player) -> relay -> wss -> rtsptunnel module -> camera simulator
#
# with IoT Hub, edgeHub and the workload API played by the embedded emulator
# (tools/edgeemu). It installs what the demo needs when missing (ffmpeg and
# Go modules: scripts/setup.sh --for demo; SKIP_SETUP=1 skips that), builds
# the demo driver (tests/cmd/demo) into .demo/bin, and runs it: it builds the
# module and the relay, starts everything, and prints a short summary. Flags
# go to the driver; see
#   scripts/demo.sh --help          (installs nothing)
# e.g. `scripts/demo.sh --camera 192.168.1.20:554 --camera-path /stream1` to
# try your own camera instead of the simulator.
# The summary names the relay's browser page (WebRTC) and the viewer's
# generated password; with --keep, open the page and watch the camera.
#
# The driver is exec'd as a built binary, not with `go run` (which does not
# pass SIGTERM on), so Ctrl-C or SIGTERM reach it and it stops everything it
# started.
set -euo pipefail
cd "$(dirname "$0")/.."

help=0
for arg in "$@"; do
	case $arg in
	-h | -help | --help | -h=* | -help=* | --help=*) help=1 ;;
	--) break ;;
	esac
done
if [ "$help" = 0 ] && [ "${SKIP_SETUP:-}" != 1 ]; then
	scripts/setup.sh --for demo
fi
mkdir -p .demo/bin
go build -o .demo/bin/demo ./tests/cmd/demo
exec .demo/bin/demo "$@"
