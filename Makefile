# Keel's entry points. `make up` brings the stack (and, as they land, the
# services) up; `make test` brings the stack up and runs every check and test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

# Go packages of every module in go.work (a new module is tested once it is
# added there with `go work use`).
PKGS := $(shell go work edit -json | sed -n 's/.*"DiskPath": "\(.*\)".*/\1\/.../p')

.PHONY: up down stack status test check fuzz generate bench

up: stack
	deploy/local/keel.sh up

stack:
	deploy/local/stack.sh up

down:
	deploy/local/keel.sh down
	deploy/local/stack.sh down

status:
	deploy/local/stack.sh status; deploy/local/keel.sh status

# The tests make their own topics and databases and must delete them:
# tools/check/leftovers lists the stack's before and fails on any left after.
test: stack check
	before=$$(mktemp) && trap 'rm -f "$$before"' EXIT && \
	go run ./tools/check/leftovers >"$$before" && \
	go test -race -count=1 -timeout 20m $(PKGS) && \
	tools/check/fuzz.sh && \
	go run ./tools/check/leftovers -since "$$before"

# Every go test -fuzz target for a few seconds each (FUZZTIME=4s).
fuzz:
	tools/check/fuzz.sh

check:
	tools/check/check.sh

generate:
	tools/check/generate.sh

bench: stack
	go run ./tools/bench
