#!/usr/bin/env bash
# scripts/setup.sh installs what the tests and the demo need on a Debian or
# Ubuntu machine: ffmpeg (ffprobe, libx264), GStreamer (rtspsrc, h264parse:
# the second independent RTSP player of the relay's tests) and iperf3 from
# apt, the Go modules of the workspace, and the npm packages of the interop
# tests.
# It only installs what is missing, so it is cheap to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
command -v gst-launch-1.0 >/dev/null 2>&1 || missing+=(gstreamer1.0-tools)
gst-inspect-1.0 rtspsrc >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-good)
gst-inspect-1.0 h264parse >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-bad)
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing ${missing[*]} with apt-get"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo="sudo"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! command -v go >/dev/null 2>&1; then
	echo "Go is not on PATH: install Go 1.26 from https://go.dev/dl/ and run this again." >&2
	exit 1
fi

echo "==> downloading Go modules"
for m in $(go list -m -f '{{.Dir}}'); do (cd "$m" && go mod download); done

for pkg in $(git ls-files '*package-lock.json' 2>/dev/null); do
	dir=$(dirname "$pkg")
	if command -v npm >/dev/null 2>&1; then
		echo "==> npm ci in $dir"
		(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	else
		echo "npm not found: the Node.js interop tests in $dir will fail" >&2
	fi
done
