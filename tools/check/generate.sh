#!/usr/bin/env bash
# generate.sh regenerates the Go types in events/<context>/v<N>/*.pb.go from
# the .proto sources in schemas/ (`make generate`). Generated code is
# committed; `make check` fails when it is stale.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(keel_root)"
ensure_tools

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
generate_into "$tmp"

# Replace rather than overwrite, so a deleted or moved .proto leaves no stale
# .pb.go behind. Only events/<context>/v<N>/ holds generated code.
find events -path 'events/*/v[0-9]*/*.pb.go' -delete
cp -R "$tmp/events/." events/
find events -path 'events/*/v[0-9]*/*.pb.go' | sort
