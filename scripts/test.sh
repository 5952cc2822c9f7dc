#!/usr/bin/env bash
# scripts/test.sh runs every check and test of the workspace: gofmt, go vet and
# go test -race over every Go module, including the end-to-end tests in tests/
# that build and run the real binaries with ffmpeg/ffprobe.
#
# It first runs scripts/setup.sh, which installs what is missing (ffmpeg,
# npm packages, Go modules), so it works on a fresh machine. Extra arguments
# go to `go test` (e.g. -run TestTunnel -v).
set -euo pipefail
cd "$(dirname "$0")/.."

[ "${SKIP_SETUP:-}" = 1 ] || scripts/setup.sh

export GOFLAGS="${GOFLAGS:--buildvcs=false}"
modules=$(go list -m -f '{{.Dir}}')

echo "==> gofmt"
unformatted=$(gofmt -l $modules)
if [ -n "$unformatted" ]; then
	echo "gofmt would change these files:" >&2
	echo "$unformatted" >&2
	exit 1
fi

pkgs=$(for m in $modules; do echo "$m/..."; done)

echo "==> go vet"
go vet $pkgs

echo "==> go test -race"
# -count=1: end-to-end tests depend on binaries and ffmpeg outside Go's cache key.
go test -race -count=1 -timeout 30m "$@" $pkgs

echo "==> fuzz"
# Every Go fuzz target for FUZZTIME each (default 10s); see scripts/fuzz.sh.
# SKIP_FUZZ=1 skips this step.
[ "${SKIP_FUZZ:-}" = 1 ] || scripts/fuzz.sh

echo "==> govulncheck"
# Called vulnerabilities in dependencies fail; standard-library ones warn (see
# scripts/vulncheck.sh). SKIP_VULNCHECK=1 skips this step.
[ "${SKIP_VULNCHECK:-}" = 1 ] || scripts/vulncheck.sh
