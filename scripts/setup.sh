#!/usr/bin/env bash
# scripts/setup.sh installs what the tests or the demo need on a Debian or
# Ubuntu machine, and only what is missing, so it is cheap to run again:
#
#   scripts/setup.sh               # = --for test: everything scripts/test.sh needs
#   scripts/setup.sh --for demo    # only what scripts/demo.sh needs
#
# --for demo: ffmpeg (ffprobe) from apt and the Go modules of the demo's
#   packages.
# --for test: also GStreamer (rtspsrc, h264parse: the second independent RTSP
#   player of the relay's tests), iperf3, and squid, iproute2 and nftables (the
#   proxy test's squid, network namespaces and firewall) from apt, the Go
#   modules of every package and test of the workspace, Chromium from apt
#   (the browser test), and the npm packages of the Node.js interop tests
#   (tools/edgeemu/interop) and of the browser test (tests/browser). npm must be on PATH (Node.js 20+);
#   `npm ci` runs only when package-lock.json changed since the last one.
#
# apt-get waits up to 10 minutes for another apt or dpkg (unattended-upgrades
# on a fresh machine) to release its lock.
#
# Go modules are fetched by loading the packages (go list -deps -test), not by
# `go mod download`: that fetches every module of each go.mod's graph, builds
# need only some, and it would record the others' sums in go.work.sum, so a
# clean clone would no longer be clean.
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=test
while [ $# -gt 0 ]; do
	case $1 in
	--for)
		[ $# -ge 2 ] || { echo "setup.sh: --for needs test or demo" >&2; exit 2; }
		purpose=$2
		shift 2
		;;
	--for=*)
		purpose=${1#--for=}
		shift
		;;
	-h | --help)
		sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "setup.sh: unknown argument $1 (usage: scripts/setup.sh [--for test|demo])" >&2
		exit 2
		;;
	esac
done
case $purpose in
test | demo) ;;
*)
	echo "setup.sh: --for $purpose: want test or demo" >&2
	exit 2
	;;
esac

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"

# apt_get runs apt-get with its arguments. When another apt or dpkg holds a
# lock, it waits for it, up to APT_LOCK_TIMEOUT seconds (default 600) in all,
# saying so every 30 s: apt's own DPkg::Lock::Timeout covers the dpkg lock of
# `install`, and the retry covers the lists lock of `update`, which apt does
# not wait for.
apt_get() {
	local timeout=${APT_LOCK_TIMEOUT:-600}
	local deadline=$((SECONDS + timeout)) said=-30 out rc
	out=$(mktemp)
	while :; do
		set +e
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout="$timeout" "$@" 2>&1 | tee "$out"
		rc=${PIPESTATUS[0]}
		set -e
		if [ "$rc" -eq 0 ] || ! grep -qiE 'could not get lock|unable to lock|unable to acquire the dpkg frontend lock' "$out"; then
			break
		fi
		if [ "$SECONDS" -ge "$deadline" ]; then
			echo "setup.sh: another apt or dpkg still holds its lock after ${timeout} s; try again when it has finished" >&2
			break
		fi
		if [ $((SECONDS - said)) -ge 30 ]; then
			echo "==> another apt or dpkg is running (unattended-upgrades?); waiting for its lock, $((deadline - SECONDS)) s at most"
			said=$SECONDS
		fi
		sleep 5
	done
	rm -f "$out"
	return "$rc"
}

missing=()
command -v ffprobe >/dev/null 2>&1 || missing+=(ffmpeg)
if [ "$purpose" = test ]; then
	command -v iperf3 >/dev/null 2>&1 || missing+=(iperf3)
	command -v gst-launch-1.0 >/dev/null 2>&1 || missing+=(gstreamer1.0-tools)
	gst-inspect-1.0 rtspsrc >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-good)
	gst-inspect-1.0 h264parse >/dev/null 2>&1 || missing+=(gstreamer1.0-plugins-bad)
	# The proxy test (tests/proxy_test.go): a real squid with its Basic
	# auth helper, network namespaces (ip) and the edge's firewall (nft).
	PATH=$PATH:/usr/sbin:/sbin command -v squid >/dev/null 2>&1 || missing+=(squid)
	PATH=$PATH:/usr/sbin:/sbin command -v ip >/dev/null 2>&1 || missing+=(iproute2)
	PATH=$PATH:/usr/sbin:/sbin command -v nft >/dev/null 2>&1 || missing+=(nftables)
	# The browser test (tests/browser_test.go) drives Debian's Chromium;
	# playwright-core (npm, below) never downloads a browser.
	[ -x /usr/bin/chromium ] || missing+=(chromium)
fi
if [ ${#missing[@]} -gt 0 ]; then
	echo "==> installing ${missing[*]} with apt-get"
	apt_get update -qq
	apt_get install -y -qq --no-install-recommends "${missing[@]}"
	# Debian starts a system-wide squid on port 3128 when it installs the
	# package; the test runs its own squid, so one installed here for it
	# does not keep serving afterwards.
	if [[ " ${missing[*]} " == *" squid "* ]] && [ -d /run/systemd/system ]; then
		systemctl disable --now squid >/dev/null 2>&1 || true
	fi
fi

if ! command -v go >/dev/null 2>&1; then
	echo "Go is not on PATH: install Go 1.26 from https://go.dev/dl/ and run this again." >&2
	exit 1
fi

echo "==> downloading Go modules ($purpose)"
if [ "$purpose" = demo ]; then
	# The demo driver and the binaries it builds (tests/internal/harness).
	go list -deps ./tests/cmd/demo ./modules/rtsptunnel ./relay >/dev/null
else
	go list -deps -test $(for m in $(go list -m -f '{{.Dir}}'); do echo "$m/..."; done) >/dev/null
fi

[ "$purpose" = test ] || exit 0

for lock in $(git ls-files '*package-lock.json' 2>/dev/null); do
	dir=$(dirname "$lock")
	if ! command -v npm >/dev/null 2>&1; then
		echo "setup.sh: npm not found: the Node.js interop tests in $dir need Node.js 20+ with npm" >&2
		echo "(e.g. from https://nodejs.org/en/download or NodeSource's Debian packages; the dev container has it)." >&2
		echo "Install it and run this again." >&2
		exit 1
	fi
	# node_modules/.package-lock-stamp holds the hash of the package-lock.json
	# and the Node.js version of the last `npm ci` (which empties node_modules
	# first, so a failed run leaves no stamp).
	stamp="$dir/node_modules/.package-lock-stamp"
	want="$(sha256sum <"$lock" | cut -d' ' -f1) node $(node --version 2>/dev/null || echo none)"
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		echo "==> npm packages in $dir are up to date"
		continue
	fi
	echo "==> npm ci in $dir"
	(cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
	echo "$want" >"$stamp"
done
