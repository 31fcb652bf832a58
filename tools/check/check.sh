#!/usr/bin/env bash
# check.sh is `make check`: the static gate every change passes before it is
# committed. It runs every step, even after one fails, then names the failed
# steps and exits 1. Steps:
#
#   gofmt       tracked and new .go files are gofmt-clean (generated *.pb.go excepted)
#   vet         go vet over every module listed in go.work
#   layers      no domain package imports, even transitively, a database,
#               Kafka, HTTP or RPC package (tools/check/layers)
#   generated   events/<context>/v<N>/*.pb.go equal a fresh `make generate`
#   buf-lint    schemas/ pass buf lint (schemas/buf.yaml)
#   buf-breaking  schemas/ are wire- and source-compatible with the previous
#               commit's: uncommitted changes are compared with HEAD, a clean
#               tree (CI) compares HEAD with HEAD~1
#   prometheus  deploy/prometheus/: promtool check config and check rules, and
#               the rules' unit tests (promtool test rules); promtool is
#               Debian's prometheus package, which deploy/local/stack.sh up
#               installs: without it the step fails
#
# The first run installs buf and protoc-gen-go into ./bin (a few minutes).
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(keel_root)" || exit 2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=()

# step NAME FUNC runs FUNC, timing it and recording NAME if it fails.
step() {
  local name=$1 start=${EPOCHREALTIME/./} ms
  echo "== $name"
  if "$2"; then
    ms=$(((${EPOCHREALTIME/./} - start) / 1000))
    printf -- '-- %s ok (%d.%03ds)\n' "$name" $((ms / 1000)) $((ms % 1000))
  else
    ms=$(((${EPOCHREALTIME/./} - start) / 1000))
    printf -- '-- %s FAILED (%d.%03ds)\n' "$name" $((ms / 1000)) $((ms % 1000))
    failed+=("$name")
    return 1
  fi
}

# Package patterns for every module in go.work, e.g. ./events/... ./tools/...
patterns=()
while IFS= read -r dir; do
  patterns+=("./${dir#"$PWD"/}/...")
done < <(go list -m -f '{{.Dir}}')

check_tools() { ensure_tools; }

check_gofmt() {
  local files=() f bad
  while IFS= read -r -d '' f; do
    [[ -f $f && $f != *.pb.go ]] && files+=("$f")
  done < <(git ls-files -z --cached --others --exclude-standard -- '*.go')
  ((${#files[@]})) || return 0
  bad=$(gofmt -l "${files[@]}") || return 1
  if [[ -n $bad ]]; then
    echo "not gofmt-clean (run gofmt -w on them):"
    sed 's/^/  /' <<<"$bad"
    return 1
  fi
}

check_vet() { go vet "${patterns[@]}"; }

check_layers() { go run ./tools/check/layers "${patterns[@]}"; }

check_generated() {
  generate_into "$tmp/fresh" || return 1
  mkdir -p "$tmp/fresh/events" "$tmp/committed/events"
  local f
  while IFS= read -r f; do
    mkdir -p "$tmp/committed/$(dirname "$f")"
    cp "$f" "$tmp/committed/$f"
  done < <(find events -path 'events/*/v[0-9]*/*.pb.go')
  if ! diff -ru "$tmp/committed/events" "$tmp/fresh/events" >"$tmp/generated.diff"; then
    echo "generated code is stale: run \`make generate\` and commit the result"
    diff -rq "$tmp/committed/events" "$tmp/fresh/events" |
      sed -e "s|$tmp/committed/||g" -e "s|$tmp/fresh/|fresh |g" -e 's/^/  /'
    return 1
  fi
}

check_buf_lint() { bin/buf lint schemas; }

check_buf_breaking() {
  local base
  if ! git rev-parse --verify --quiet HEAD >/dev/null; then
    echo "note: no commit yet; breaking check skipped"
    return 0
  fi
  if git diff --quiet HEAD -- schemas && [[ -z $(git ls-files --others --exclude-standard -- schemas) ]]; then
    base=HEAD~1 # clean tree: judge the last commit
  else
    base=HEAD # judge the uncommitted changes
  fi
  if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
    if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
      git fetch --quiet --deepen=1 >/dev/null 2>&1 || true
    fi
    if ! git rev-parse --verify --quiet "$base^{commit}" >/dev/null; then
      echo "note: $base is not available (first commit, or a shallow clone that could not be deepened); breaking check skipped"
      return 0
    fi
  fi
  if ! git cat-file -e "$base:schemas" 2>/dev/null; then
    echo "note: $base has no schemas/; nothing to be compatible with, breaking check skipped"
    return 0
  fi
  mkdir -p "$tmp/base"
  git archive "$base" schemas | tar -x -C "$tmp/base" || return 1
  echo "comparing schemas/ with $base ($(git rev-parse --short "$base"))"
  bin/buf breaking schemas --against "$tmp/base/schemas"
}

check_prometheus() {
  if ! command -v promtool >/dev/null; then
    echo "promtool not found: run deploy/local/stack.sh up (it installs Debian's prometheus package) or apt-get install prometheus"
    return 1
  fi
  promtool check config deploy/prometheus/prometheus.yml &&
    promtool check rules deploy/prometheus/keel-rules.yml &&
    promtool test rules deploy/prometheus/keel-rules.test.yml
}

step gofmt check_gofmt
step vet check_vet
step layers check_layers
step prometheus check_prometheus
if step tools check_tools; then
  step generated check_generated
  step buf-lint check_buf_lint
  step buf-breaking check_buf_breaking
else
  echo "-- generated, buf-lint, buf-breaking not run: no tools"
  failed+=(generated buf-lint buf-breaking)
fi

if ((${#failed[@]})); then
  echo "make check: FAILED: ${failed[*]}"
  exit 1
fi
echo "make check: ok"
