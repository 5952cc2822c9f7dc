#!/usr/bin/env bash
# scripts/vulncheck.sh runs govulncheck over every Go module of the workspace and fails
# when code calls a vulnerable function of a dependency.
#
# The product modules are checked on their own (GOWORK=off), as their images are built;
# a module that only builds inside the workspace (tests/) is checked in it.
#
# The vulnerability database is read offline from the golang.org/x/vulndb Go module
# (served by the module proxy like any module; vuln.go.dev need not be reachable):
# its OSV files are indexed once per machine and database version into the Go build
# cache. VULNDB=https://vuln.go.dev (or any file:// or https:// database) overrides it.
#
# Findings in the Go standard library are fixed by a newer Go toolchain, not by this
# repository's go.mod files: they are printed as warnings, with the fixed versions, and
# fail the check only with VULNCHECK_STDLIB=fail.
set -euo pipefail
cd "$(dirname "$0")/.."
export GOFLAGS="${GOFLAGS:--buildvcs=false}"

GOVULNCHECK_PKG=golang.org/x/vuln/cmd/govulncheck@v1.9.0
VULNDB_MODULE=golang.org/x/vulndb
VULNDB_VERSION=v0.0.0-20261105234957-e22db6528018

# Installed (not go run) into the build cache: go run would turn govulncheck's exit
# status 3 (vulnerabilities found) into 1.
bin="$(go env GOCACHE)/rtsptunnel-tools/govulncheck-v1.9.0"
if [ ! -x "$bin/govulncheck" ]; then
	GOWORK=off GOBIN="$bin" go install "$GOVULNCHECK_PKG"
fi
GOVULNCHECK="$bin/govulncheck"

if [ -z "${VULNDB:-}" ]; then
	db="$(go env GOCACHE)/rtsptunnel-vulndb/$VULNDB_VERSION"
	if [ ! -f "$db/index/db.json" ]; then
		echo "vulncheck: indexing the Go vulnerability database $VULNDB_VERSION (once per machine)"
		src=$(GOFLAGS=-mod=mod go mod download -json "$VULNDB_MODULE@$VULNDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
		rm -rf "$db.tmp" && mkdir -p "$db.tmp"
		GOWORK=off go run "$VULNDB_MODULE/cmd/indexdb@$VULNDB_VERSION" -vulns "$src/data/osv" -out "$db.tmp"
		rm -rf "$db" && mv "$db.tmp" "$db"
	fi
	VULNDB="file://$db"
fi

status=0
stdlib_only=()
for dir in $(go list -m -f '{{.Dir}}'); do
	rel=${dir#"$PWD"/}
	mode="GOWORK=off"
	if ! (cd "$dir" && GOWORK=off go list ./... >/dev/null 2>&1); then
		mode="workspace"
	fi
	echo "==> govulncheck $rel ($mode)"
	out=$(mktemp)
	set +e
	if [ "$mode" = "GOWORK=off" ]; then
		(cd "$dir" && GOWORK=off "$GOVULNCHECK" -db "$VULNDB" ./...) >"$out" 2>&1
	else
		(cd "$dir" && "$GOVULNCHECK" -db "$VULNDB" ./...) >"$out" 2>&1
	fi
	rc=$?
	set -e
	case $rc in
	0) echo "no vulnerabilities called" ;;
	3)
		# "Found in: <module or package>@<version>" per called vulnerability; the
		# standard library's versions are Go versions (go1.x).
		if grep -E '^[[:space:]]*Found in: ' "$out" | grep -vqE '@go1\.'; then
			cat "$out"
			echo "vulncheck: $rel calls vulnerable code in its dependencies (above); upgrade them" >&2
			status=1
		else
			grep -E '^(Vulnerability #|[[:space:]]+(Found|Fixed) in: )' "$out" | sed 's/^/    /'
			stdlib_only+=("$rel")
		fi
		;;
	*)
		cat "$out"
		echo "vulncheck: govulncheck failed on $rel (exit $rc)" >&2
		status=1
		;;
	esac
	rm -f "$out"
done

if [ ${#stdlib_only[@]} -gt 0 ]; then
	echo "vulncheck: WARNING: the Go standard library of $(go env GOVERSION) has known vulnerabilities reachable from: ${stdlib_only[*]}." >&2
	echo "vulncheck: they are fixed in the Go versions listed above (update the toolchain; images build with the newest golang:1.26)." >&2
	if [ "${VULNCHECK_STDLIB:-warn}" = fail ]; then
		status=1
	fi
fi
exit $status
