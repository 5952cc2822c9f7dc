#!/usr/bin/env bash
# scripts/build-images.sh builds the rtsptunnel container images with docker
# buildx, one per platform listed in modules/rtsptunnel/module.json, tagged
# <CONTAINER_REGISTRY_SERVER>/rtsptunnel:<version>-<platform> (version from
# module.json, registry from .env or the environment), exactly the tags that
# scripts/gen-deployment.sh writes into the deployment manifest.
#
#   scripts/build-images.sh                       # every platform, loaded into the local docker
#   scripts/build-images.sh -p amd64 -p arm64v8   # some platforms
#   scripts/build-images.sh --push                # build and push (docker login first, see below)
#   scripts/build-images.sh --dry-run             # print the commands only
#
# The Go compiler runs natively and cross-compiles (no QEMU needed); only the
# final distroless layer is of the target platform. With --push and
# CONTAINER_REGISTRY_USERNAME/PASSWORD set, it runs `docker login` first;
# for Azure Container Registry `az acr login --name <registry>` works as well.
#
# Options: -p|--platform P (repeatable)  --push  --dry-run  -e|--env FILE (.env)
set -euo pipefail
cd "$(dirname "$0")/.."

platforms=() push=0 dry=0 envfile=.env
while [ $# -gt 0 ]; do
	case $1 in
	-p | --platform) platforms+=("$2"); shift 2 ;;
	--push) push=1; shift ;;
	--dry-run) dry=1; shift ;;
	-e | --env) envfile=$2; shift 2 ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "build-images.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done
command -v go >/dev/null 2>&1 || { echo "build-images.sh: needs Go (https://go.dev/dl/)" >&2; exit 1; }

# Docker platform of each IoT Edge platform name.
docker_platform() {
	case $1 in
	amd64 | amd64.debug) echo linux/amd64 ;;
	arm32v7 | arm32v7.debug) echo linux/arm/v7 ;;
	arm64v8 | arm64v8.debug) echo linux/arm64 ;;
	*) echo "build-images.sh: unknown platform $1" >&2; return 1 ;;
	esac
}

run() {
	printf '+'
	printf ' %q' "$@"
	printf '\n'
	[ "$dry" = 1 ] || "$@"
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
GOWORK=off GOFLAGS=-buildvcs=false go build -o "$tmp/edgetool" scripts/edgetool/main.go
args=(-env "$envfile")
for p in "${platforms[@]+"${platforms[@]}"}"; do args+=(-platform "$p"); done
"$tmp/edgetool" images "${args[@]}" >"$tmp/images"

if [ "$push" = 1 ] && [ "$dry" = 0 ]; then
	# Same precedence as edgetool: the environment wins over the env file.
	user=${CONTAINER_REGISTRY_USERNAME:-} pass=${CONTAINER_REGISTRY_PASSWORD:-} server=${CONTAINER_REGISTRY_SERVER:-}
	if [ -f "$envfile" ]; then
		[ -n "$user" ] || user=$(sed -n 's/^CONTAINER_REGISTRY_USERNAME=//p' "$envfile" | tail -1)
		[ -n "$pass" ] || pass=$(sed -n 's/^CONTAINER_REGISTRY_PASSWORD=//p' "$envfile" | tail -1)
		[ -n "$server" ] || server=$(sed -n 's/^CONTAINER_REGISTRY_SERVER=//p' "$envfile" | tail -1)
	fi
	if [ -n "$user" ] && [ -n "$pass" ]; then
		echo "+ docker login $server --username $user --password-stdin"
		printf '%s' "$pass" | docker login "$server" --username "$user" --password-stdin
	fi
fi

while IFS=$'\t' read -r platform dockerfile context image version; do
	dp=$(docker_platform "$platform")
	out=--load
	[ "$push" = 1 ] && out=--push
	run docker buildx build --platform "$dp" -f "$dockerfile" \
		--build-arg "VERSION=$version" -t "$image" "$out" "$context"
done <"$tmp/images"
