#!/usr/bin/env bash
# Keel's own processes on the local stack, started after deploy/local/stack.sh.
# Today: one event-store relay per context (keel-relay), which creates the
# context's <context>.events topic and publishes its store to it. The services
# join this list as they land.
#
#   deploy/local/keel.sh up      build and start what is not running (idempotent)
#   deploy/local/keel.sh down    stop them (SIGTERM, then wait)
#   deploy/local/keel.sh status  show what runs, with /metrics addresses
#
# Environment: KEEL_PG_URL, KEEL_KAFKA_BROKERS (as for stack.sh), KEEL_STACK_DIR,
# KEEL_CONTEXTS [stock carts orders payments checkout], KEEL_RELAY_METRICS_PORT [9464]
# (the first context's relay serves /metrics there, the next one port+1, ...).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${KEEL_STACK_DIR:-$REPO/.stack}
BIN=$STACK_DIR/bin
RUN=$STACK_DIR/run
LOGS=$STACK_DIR/logs/keel
CONTEXTS=${KEEL_CONTEXTS:-stock carts orders payments checkout}
METRICS_PORT=${KEEL_RELAY_METRICS_PORT:-9464}

log() { printf 'keel: %s\n' "$*" >&2; }

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

up() {
	command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
	mkdir -p "$BIN" "$RUN" "$LOGS"
	(cd "$REPO" && go build -o "$BIN/keel-relay" ./events/cmd/keel-relay)
	local port=$METRICS_PORT ctx pid
	for ctx in $CONTEXTS; do
		pid=$RUN/relay-$ctx.pid
		if running "$pid"; then
			log "relay $ctx already running (pid $(cat "$pid"))"
		else
			KEEL_CONTEXT=$ctx KEEL_METRICS_ADDR=127.0.0.1:$port \
				setsid nohup "$BIN/keel-relay" >>"$LOGS/relay-$ctx.log" 2>&1 </dev/null &
			echo $! >"$pid"
			log "relay $ctx started (pid $!, metrics http://127.0.0.1:$port/metrics, log $LOGS/relay-$ctx.log)"
		fi
		port=$((port + 1))
	done
	# Wait for each relay to answer /healthz (it has migrated its store and created its topic).
	port=$METRICS_PORT
	for ctx in $CONTEXTS; do
		for _ in $(seq 1 100); do
			curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
			running "$RUN/relay-$ctx.pid" || { tail -n 20 "$LOGS/relay-$ctx.log" >&2; log "ERROR: relay $ctx exited"; exit 1; }
			sleep 0.2
		done
		curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 || { log "ERROR: relay $ctx does not answer on :$port"; exit 1; }
		port=$((port + 1))
	done
	log "ready: relays for $CONTEXTS"
}

down() {
	local f
	for f in "$RUN"/*.pid; do
		[[ -e $f ]] || continue
		if running "$f"; then
			kill -TERM "$(cat "$f")"
			for _ in $(seq 1 50); do running "$f" || break; sleep 0.1; done
			running "$f" && kill -KILL "$(cat "$f")"
		fi
		rm -f "$f"
	done
	log "stopped"
}

status() {
	local port=$METRICS_PORT ctx rc=0
	for ctx in $CONTEXTS; do
		if running "$RUN/relay-$ctx.pid"; then
			echo "relay $ctx: running (pid $(cat "$RUN/relay-$ctx.pid")), metrics http://127.0.0.1:$port/metrics"
		else
			echo "relay $ctx: stopped"; rc=1
		fi
		port=$((port + 1))
	done
	return $rc
}

case ${1:-} in
up) up ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
