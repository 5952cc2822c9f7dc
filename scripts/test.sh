#!/usr/bin/env bash
# scripts/test.sh runs every check and test of the workspace, in stages:
#
#   gofmt        every Go module
#   go vet       every package of every module
#   standalone modules
#                the module, relay, camerasim and edgeemu are `go mod tidy`
#                clean with GOWORK=off, and the module's tests pass there
#   go test      -race, every module, including the end-to-end tests in tests/
#                that build and run the real binaries with ffmpeg/ffprobe and
#                GStreamer, the Node.js SDK interop test of tools/edgeemu, and
#                the browser test in Chromium; test artefacts (its screenshot)
#                are kept under ARTIFACTS_DIR (default .cache/test-artifacts)
#   fuzz         every Go fuzz target for FUZZTIME each (default 10s; scripts/fuzz.sh)
#   govulncheck  every module against a pinned vulnerability database
#                (scripts/vulncheck.sh)
#
# A full run takes about 8-10 minutes on a 2-core machine (go test about 5,
# fuzz about 3). Every stage runs even when an earlier one failed; a summary of
# the stages ends the output, and the exit status is non-zero if any failed.
#
# It first runs scripts/setup.sh, which installs what is missing (ffmpeg,
# GStreamer, iperf3, Go modules, npm packages), so it works on a fresh machine;
# SKIP_SETUP=1 skips that. SKIP_FUZZ=1 and SKIP_VULNCHECK=1 skip those stages.
# Extra arguments go to `go test` (e.g. -run TestTunnel -v).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${SKIP_SETUP:-}" = 1 ] || scripts/setup.sh --for test

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
modules=$(go list -m -f '{{.Dir}}')
pkgs=$(for m in $modules; do echo "$m/..."; done)

results=()
failed=0
start=$SECONDS
# stage NAME COMMAND...: runs one stage, remembers whether it passed.
stage() {
	local name=$1 t0=$SECONDS rc=0
	shift
	echo "==> $name"
	"$@" || rc=$?
	if [ "$rc" -eq 0 ]; then
		results+=("pass  $name ($((SECONDS - t0)) s)")
	else
		results+=("FAIL  $name ($((SECONDS - t0)) s, exit $rc)")
		failed=1
	fi
}
skipped() {
	echo "==> $1: skipped ($2)"
	results+=("skip  $1 ($2)")
}

check_gofmt() {
	local unformatted
	unformatted=$(gofmt -l $modules) || return
	if [ -n "$unformatted" ]; then
		echo "gofmt would change these files:" >&2
		echo "$unformatted" >&2
		return 1
	fi
}

# check_standalone: the Go modules that build on their own (the shipped
# module above all: its image builds from modules/rtsptunnel alone) are
# `go mod tidy` clean without the workspace, and the module's own tests pass
# there. Tests that need the emulator live in workspace-only test modules
# (tests/, modules/rtsptunnel/internal/hub/emulatortest).
check_standalone() {
	local m rc=0
	for m in modules/rtsptunnel relay tools/camerasim tools/edgeemu; do
		echo "--- $m: GOWORK=off go mod tidy -diff"
		(cd "$m" && GOWORK=off go mod tidy -diff) || rc=1
	done
	echo "--- modules/rtsptunnel: GOWORK=off go test ./..."
	(cd modules/rtsptunnel && GOWORK=off go test -count=1 ./...) || rc=1
	return $rc
}

stage gofmt check_gofmt
stage "go vet" go vet $pkgs
stage "standalone modules" check_standalone
# -count=1: end-to-end tests depend on binaries and ffmpeg outside Go's cache key.
artifacts=$(realpath -m "${ARTIFACTS_DIR:-.cache/test-artifacts}")
mkdir -p "$artifacts"
stage "go test -race" go test -race -count=1 -timeout 30m -artifacts -outputdir "$artifacts" "$@" $pkgs
if [ "${SKIP_FUZZ:-}" = 1 ]; then
	skipped fuzz SKIP_FUZZ=1
else
	stage fuzz scripts/fuzz.sh
fi
# Called vulnerabilities in dependencies fail; standard-library ones warn (see
# scripts/vulncheck.sh).
if [ "${SKIP_VULNCHECK:-}" = 1 ]; then
	skipped govulncheck SKIP_VULNCHECK=1
else
	stage govulncheck scripts/vulncheck.sh
fi

echo
echo "==> summary ($((SECONDS - start)) s)"
printf '  %s\n' "${results[@]}"
if [ "$failed" -ne 0 ]; then
	echo "test.sh: FAILED (see the stages above)" >&2
	exit 1
fi
echo "test.sh: all stages passed"
