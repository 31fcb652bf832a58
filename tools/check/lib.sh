# Shared by check.sh and generate.sh; source it, do not run it.
#
# Pins the schema toolchain and installs it into the repo-local ./bin
# (gitignored). An install is skipped when the binary there already reports
# the pinned version, so only the first run pays for building buf.

BUF_VERSION=1.75.0
# Keep equal to google.golang.org/protobuf in events/go.mod: the generated
# code and the runtime it calls into come from the same release.
PROTOC_GEN_GO_VERSION=1.36.12

# keel_root prints the repository root (the directory holding go.work).
keel_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}

# ensure_tools installs bin/buf and bin/protoc-gen-go at the pinned versions.
# Run from the repository root.
ensure_tools() {
  local bin=$PWD/bin
  mkdir -p "$bin"
  if [[ "$("$bin/buf" --version 2>/dev/null)" != "$BUF_VERSION" ]]; then
    echo "installing buf v$BUF_VERSION into bin/ (first run only; takes a few minutes)" >&2
    GOBIN=$bin GOWORK=off go install "github.com/bufbuild/buf/cmd/buf@v$BUF_VERSION"
  fi
  if [[ "$("$bin/protoc-gen-go" --version 2>/dev/null)" != "protoc-gen-go v$PROTOC_GEN_GO_VERSION" ]]; then
    echo "installing protoc-gen-go v$PROTOC_GEN_GO_VERSION into bin/" >&2
    GOBIN=$bin GOWORK=off go install "google.golang.org/protobuf/cmd/protoc-gen-go@v$PROTOC_GEN_GO_VERSION"
  fi
}

# generate_into DIR writes the Go code for schemas/ under DIR/events/.
generate_into() {
  bin/buf generate schemas --template schemas/buf.gen.yaml --output "$1"
}
