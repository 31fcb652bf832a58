#!/usr/bin/env bash
# Keel's own processes on the local stack, started after deploy/local/stack.sh:
# one event-store relay per context (keel-relay), which creates the context's
# <context>.events topic and publishes its store to it, and every service
# binary found at services/<svc>/cmd/<svc>, then the read side at
# projections/cmd/keel-projections (built here, started with
# KEEL_HTTP_ADDR=127.0.0.1:<port from SERVICE_PORTS>, ready when /readyz answers).
#
#   deploy/local/keel.sh up      build and start what is not running (idempotent)
#   deploy/local/keel.sh down    stop them (SIGTERM, then wait)
#   deploy/local/keel.sh status  show what runs, with /metrics addresses
#
# Each process runs under a small supervisor (this script's `supervise`),
# as systemd's Restart=always or a Kubernetes pod would: a process that
# dies (crash, kill -9, a start-up that found PostgreSQL down) is started
# again after 1 s, then 2, 4 ... up to 30 s while it keeps dying (back to
# 1 s after a minute up), each restart logged in its log. The pid files
# hold the supervisors; `down` stops each supervisor and its process.
# Every consumer runs as a static group member (KEEL_KAFKA_INSTANCE_ID =
# its name), so a restarted one takes its partitions back at once instead
# of after the dead member's session timeout.
#
# Environment: KEEL_PG_URL, KEEL_KAFKA_BROKERS (as for stack.sh), KEEL_STACK_DIR,
# KEEL_CONTEXTS [stock carts orders payments checkout catalog], KEEL_RELAY_METRICS_PORT [9464]
# (the first context's relay serves /metrics there, the next one port+1, ...).
# Contexts whose service runs its own relay get no keel-relay (their port is
# kept, so the others' do not move): checkout, whose store holds the saga's
# events and its outbox commands, published with a route by the service.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${KEEL_STACK_DIR:-$REPO/.stack}
BIN=$STACK_DIR/bin
RUN=$STACK_DIR/run
LOGS=$STACK_DIR/logs/keel
CONTEXTS=${KEEL_CONTEXTS:-stock carts orders payments checkout catalog}
METRICS_PORT=${KEEL_RELAY_METRICS_PORT:-9464}
# own_relay says whether ctx's service publishes its store itself.
own_relay() { [[ $1 == checkout && -f $REPO/services/checkout/cmd/checkout/main.go ]]; }
# HTTP port of each service (fixed, so the README and tools can name them).
# keel-projections is the read side: every projection's builder and the query API.
declare -A SERVICE_PORTS=([stock]=8081 [carts]=8082 [orders]=8083 [payments]=8084 [checkout]=8085 [catalog]=8086 [keel-projections]=8090)

# services lists the service binaries present in the tree: the services,
# then the read side (it reads the topics the services create).
services() {
	local d
	for d in "$REPO"/services/*/cmd/*/ "$REPO"/projections/cmd/*/; do
		[[ -f $d/main.go ]] && basename "$d"
	done
}

service_dir() { dirname "$(dirname "$(ls -d "$REPO"/services/*/cmd/"$1"/ "$REPO"/projections/cmd/"$1"/ 2>/dev/null | head -n1)")"; }

wait_http() { # name url pidfile logfile
	for _ in $(seq 1 150); do
		curl -fsS "$2" >/dev/null 2>&1 && return 0
		running "$3" || { tail -n 20 "$4" >&2; log "ERROR: $1 exited"; exit 1; }
		sleep 0.2
	done
	log "ERROR: $1 does not answer $2"
	exit 1
}

log() { printf 'keel: %s\n' "$*" >&2; }

running() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# supervise name logfile cmd...: run cmd, again whenever it exits, until
# SIGTERM, which is passed on to cmd and waited for. Started by start()
# with setsid, so the supervisor and its process are one process group.
supervise() {
	local name=$1 logf=$2 child= rc started delay=1
	shift 2
	trap '[[ -n $child ]] && kill -TERM "$child" 2>/dev/null; wait "$child" 2>/dev/null; exit 0' TERM INT
	while :; do
		started=$SECONDS
		"$@" >>"$logf" 2>&1 </dev/null &
		child=$!
		rc=0
		wait "$child" || rc=$?
		((SECONDS - started >= 60)) && delay=1
		printf 'keel: %s exited (status %s); restarting in %ss\n' "$name" "$rc" "$delay" >>"$logf"
		sleep "$delay" &
		wait $! || true
		delay=$((delay * 2 > 30 ? 30 : delay * 2))
	done
}

# start name pidfile logfile cmd...: start cmd under its supervisor.
start() {
	local name=$1 pid=$2 logf=$3
	shift 3
	setsid nohup "$REPO/deploy/local/keel.sh" supervise "$name" "$logf" "$@" >/dev/null 2>&1 </dev/null &
	echo $! >"$pid"
}

up() {
	command -v curl >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq curl >/dev/null
	mkdir -p "$BIN" "$RUN" "$LOGS"
	(cd "$REPO" && go build -o "$BIN/keel-relay" ./events/cmd/keel-relay)
	local port=$METRICS_PORT ctx pid
	for ctx in $CONTEXTS; do
		pid=$RUN/relay-$ctx.pid
		if own_relay "$ctx"; then
			log "relay $ctx: published by the $ctx service"
		elif running "$pid"; then
			log "relay $ctx already running (pid $(cat "$pid"))"
		else
			KEEL_CONTEXT=$ctx KEEL_METRICS_ADDR=127.0.0.1:$port \
				start "relay $ctx" "$pid" "$LOGS/relay-$ctx.log" "$BIN/keel-relay"
			log "relay $ctx started (supervisor pid $(cat "$pid"), metrics http://127.0.0.1:$port/metrics, log $LOGS/relay-$ctx.log)"
		fi
		port=$((port + 1))
	done
	port=$METRICS_PORT
	for ctx in $CONTEXTS; do
		own_relay "$ctx" || wait_http "relay $ctx" "http://127.0.0.1:$port/healthz" "$RUN/relay-$ctx.pid" "$LOGS/relay-$ctx.log"
		port=$((port + 1))
	done
	local svc dir
	for svc in $(services); do
		port=${SERVICE_PORTS[$svc]:?no port for service $svc in deploy/local/keel.sh}
		pid=$RUN/svc-$svc.pid
		if running "$pid"; then
			log "$svc already running (pid $(cat "$pid"))"
			continue
		fi
		dir=$(service_dir "$svc")
		(cd "$dir" && go build -o "$BIN/$svc" "./cmd/$svc")
		KEEL_HTTP_ADDR=127.0.0.1:$port KEEL_KAFKA_INSTANCE_ID=${KEEL_KAFKA_INSTANCE_ID:-$svc} \
			start "$svc" "$pid" "$LOGS/$svc.log" "$BIN/$svc"
		log "$svc started (supervisor pid $(cat "$pid"), http://127.0.0.1:$port, log $LOGS/$svc.log)"
	done
	for svc in $(services); do
		wait_http "$svc" "http://127.0.0.1:${SERVICE_PORTS[$svc]}/readyz" "$RUN/svc-$svc.pid" "$LOGS/$svc.log"
	done
	log "ready: relays for $CONTEXTS; services: $(services | tr '\n' ' ')"
}

down() {
	local f
	for f in "$RUN"/*.pid; do
		[[ -e $f ]] || continue
		if running "$f"; then
			# The supervisor passes TERM on and waits for its process to
			# drain; past 15 s the whole group (both) is killed.
			kill -TERM "$(cat "$f")"
			for _ in $(seq 1 150); do running "$f" || break; sleep 0.1; done
			running "$f" && kill -KILL -- "-$(cat "$f")"
		fi
		rm -f "$f"
	done
	log "stopped"
}

status() {
	local port=$METRICS_PORT ctx rc=0
	for ctx in $CONTEXTS; do
		if own_relay "$ctx" && ! running "$RUN/relay-$ctx.pid"; then
			echo "relay $ctx: published by the $ctx service"
		elif running "$RUN/relay-$ctx.pid"; then
			echo "relay $ctx: running (pid $(cat "$RUN/relay-$ctx.pid")), metrics http://127.0.0.1:$port/metrics"
		else
			echo "relay $ctx: stopped"; rc=1
		fi
		port=$((port + 1))
	done
	local svc
	for svc in $(services); do
		if running "$RUN/svc-$svc.pid"; then
			echo "$svc: running (pid $(cat "$RUN/svc-$svc.pid")), http://127.0.0.1:${SERVICE_PORTS[$svc]}"
		else
			echo "$svc: stopped"; rc=1
		fi
	done
	return $rc
}

case ${1:-} in
up) up ;;
supervise) shift; supervise "$@" ;;
down) down ;;
status) status ;;
*) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
