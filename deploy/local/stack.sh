#!/usr/bin/env bash
# Keel's local stack without Docker: one Apache Kafka broker (KRaft, broker and
# controller in one JVM, fetched from Maven Central with mvn) and the machine's
# PostgreSQL cluster (Debian's postgresql package). It also installs promtool
# (Debian's prometheus package, its server left stopped) for make check.
#
#   deploy/local/stack.sh up      install what is missing, start both, wait until they answer
#   deploy/local/stack.sh down    stop both (data is kept)
#   deploy/local/stack.sh status  show what runs where
#
# Everything is driven by environment variables (defaults in brackets):
#   KEEL_KAFKA_BROKERS   [127.0.0.1:9092]  broker address(es); the first one is the local listener
#   KEEL_KAFKA_CONTROLLER_PORT [broker port + 1]  KRaft controller listener (127.0.0.1)
#   KEEL_PG_URL          [postgres://keel:keel@127.0.0.1:5432/postgres]  the server; its user/password
#                        are the role the services use, each service uses its own database on it
#   KEEL_PG_DATABASES    [keel_stock keel_carts keel_orders keel_payments keel_checkout keel_catalog keel_projections]
#   KEEL_STACK_DIR       [<repo>/.stack]  downloaded broker, its data and logs
#   KEEL_KAFKA_VERSION   [4.3.1]  org.apache.kafka:kafka_2.13 version
#   KEEL_KAFKA_HEAP      [-Xms512m -Xmx1g]
#   KEEL_STACK_TIMEOUT   [120]  seconds to wait for each component to answer
#   KEEL_EXTERNAL_STACK  [0]  1: install and start nothing, only wait for the addresses above
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STACK_DIR=${KEEL_STACK_DIR:-$REPO/.stack}
KAFKA_BROKERS=${KEEL_KAFKA_BROKERS:-127.0.0.1:9092}
PG_URL=${KEEL_PG_URL:-postgres://keel:keel@127.0.0.1:5432/postgres}
PG_DATABASES=${KEEL_PG_DATABASES:-keel_stock keel_carts keel_orders keel_payments keel_checkout keel_catalog keel_projections}
KAFKA_VERSION=${KEEL_KAFKA_VERSION:-4.3.1}
KAFKA_HEAP=${KEEL_KAFKA_HEAP:--Xms512m -Xmx1g}
TIMEOUT=${KEEL_STACK_TIMEOUT:-120}
EXTERNAL=${KEEL_EXTERNAL_STACK:-0}
PG_MAX_CONNECTIONS=${KEEL_PG_MAX_CONNECTIONS:-300}

# Pinned helper versions (all served by Maven Central).
LOG4J_VERSION=2.25.3
SLF4J_VERSION=2.0.17
DEPENDENCY_PLUGIN_VERSION=3.8.1

KAFKA_DIR=$STACK_DIR/kafka
KAFKA_LIB=$KAFKA_DIR/lib
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_PID=$KAFKA_DIR/kafka.pid
LOG_DIR=$STACK_DIR/logs
KAFKA_LOG_DIR=$LOG_DIR/kafka
KAFKA_OUT=$KAFKA_LOG_DIR/kafka.out
KAFKA_MARKER=$KAFKA_LIB/.fetched-kafka_2.13-$KAFKA_VERSION

log() { printf 'stack: %s\n' "$*" >&2; }
die() { printf 'stack: ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- addresses

FIRST_BROKER=${KAFKA_BROKERS%%,*}
KAFKA_HOST=${FIRST_BROKER%:*}
KAFKA_PORT=${FIRST_BROKER##*:}
[[ $KAFKA_PORT =~ ^[0-9]+$ && $KAFKA_HOST != "$FIRST_BROKER" ]] ||
	die "KEEL_KAFKA_BROKERS must be host:port[,host:port...], got '$KAFKA_BROKERS'"
CONTROLLER_PORT=${KEEL_KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}

# postgres://user:password@host:port/dbname?params
if [[ $PG_URL =~ ^postgres(ql)?://([^:@/]+)(:([^@/]*))?@([^:/?]+)(:([0-9]+))?(/([^?]*))?(\?.*)?$ ]]; then
	PG_USER=${BASH_REMATCH[2]}
	PG_PASSWORD=${BASH_REMATCH[4]}
	PG_HOST=${BASH_REMATCH[5]}
	PG_PORT=${BASH_REMATCH[7]:-5432}
	PG_DB=${BASH_REMATCH[9]:-postgres}
else
	die "KEEL_PG_URL must look like postgres://user:password@host:port/db, got '$PG_URL'"
fi
PG_URL_SHOWN="postgres://$PG_USER:***@$PG_HOST:$PG_PORT/$PG_DB"

# tcp_open HOST PORT: something accepts connections there.
tcp_open() { timeout 2 bash -c ": </dev/tcp/$1/$2" 2>/dev/null; }

# ---------------------------------------------------------------- packages

java_major() {
	command -v java >/dev/null || { echo 0; return; }
	java -XshowSettings:properties -version 2>&1 |
		sed -n 's/^ *java\.specification\.version = \([0-9]*\).*/\1/p' | head -n1
}

# prometheus_server_off stops and disables the server Debian's prometheus
# package starts on :9090: the stack wants its promtool only.
prometheus_server_off() {
	if [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
		systemctl disable --now prometheus.service >/dev/null 2>&1 || true
	elif [[ -x /etc/init.d/prometheus ]]; then
		/etc/init.d/prometheus stop >/dev/null 2>&1 || true
		update-rc.d prometheus disable >/dev/null 2>&1 || true
	fi
}

ensure_packages() {
	local missing=()
	if ! command -v pg_lsclusters >/dev/null || ! command -v pg_ctlcluster >/dev/null ||
		! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
		missing+=(postgresql)
	fi
	command -v psql >/dev/null || missing+=(postgresql-client)
	local jm
	jm=$(java_major)
	if [[ -z $jm || $jm -lt 17 ]]; then missing+=(openjdk-17-jre-headless); fi
	command -v mvn >/dev/null || missing+=(maven)
	command -v flock >/dev/null || missing+=(util-linux)
	# promtool, for make check's rule tests (deploy/prometheus).
	command -v promtool >/dev/null || missing+=(prometheus)
	((${#missing[@]} == 0)) && return 0
	[[ $(id -u) == 0 ]] || die "missing packages (${missing[*]}); run as root or install them: apt-get install ${missing[*]}"
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
	if [[ " ${missing[*]} " == *" prometheus "* ]]; then prometheus_server_off; fi
	if [[ -z $(java_major) || $(java_major) -lt 17 ]]; then
		die "java on PATH is still older than 17 ($(command -v java)); select a Java 17 runtime with update-alternatives"
	fi
}

# ---------------------------------------------------------------- kafka

kafka_fetch() {
	if [[ -f $KAFKA_MARKER ]]; then return 0; fi
	log "fetching org.apache.kafka:kafka_2.13:$KAFKA_VERSION with mvn into $KAFKA_LIB"
	mkdir -p "$KAFKA_DIR"
	cat >"$KAFKA_DIR/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/stack.sh: the runtime classpath of the local broker. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>keel.local</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>$KAFKA_VERSION</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId><version>$SLF4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
  <build>
    <plugins>
      <plugin>
        <groupId>org.apache.maven.plugins</groupId>
        <artifactId>maven-dependency-plugin</artifactId>
        <version>$DEPENDENCY_PLUGIN_VERSION</version>
      </plugin>
    </plugins>
  </build>
</project>
EOF
	local tmp=$KAFKA_DIR/lib.tmp
	rm -rf "$tmp"
	if ! (cd "$KAFKA_DIR" && mvn -q -B -f pom.xml \
		"org.apache.maven.plugins:maven-dependency-plugin:$DEPENDENCY_PLUGIN_VERSION:copy-dependencies" \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$KAFKA_DIR/mvn.log" 2>&1); then
		tail -n 30 "$KAFKA_DIR/mvn.log" >&2
		die "mvn could not fetch Kafka $KAFKA_VERSION (full output: $KAFKA_DIR/mvn.log)"
	fi
	[[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "mvn finished but kafka_2.13-$KAFKA_VERSION.jar is missing in $tmp"
	rm -rf "$KAFKA_LIB"
	mv "$tmp" "$KAFKA_LIB"
	echo "org.apache.kafka:kafka_2.13:$KAFKA_VERSION" >"$KAFKA_MARKER"
}

# kafka_java CLASS ARGS...: run a class from the broker's classpath (tools log warnings to stderr).
KAFKA_TOOL_JAVA=(java -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
	"-Dlog4j2.configurationFile=$KAFKA_DIR/tools-log4j2.xml" -cp "$KAFKA_LIB/*")
kafka_java() { "${KAFKA_TOOL_JAVA[@]}" "$@"; }

kafka_write_config() {
	mkdir -p "$KAFKA_DATA" "$KAFKA_LOG_DIR"
	local new=$KAFKA_CONF.new
	cat >"$new" <<EOF
# Generated by deploy/local/stack.sh on each 'up'; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$KAFKA_HOST:$KAFKA_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$KAFKA_DATA
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
auto.create.topics.enable=false
delete.topic.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.retention.hours=168
EOF
	if cmp -s "$new" "$KAFKA_CONF"; then rm -f "$new"; else mv "$new" "$KAFKA_CONF"; fi

	cat >"$KAFKA_DIR/log4j2.xml.new" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<!-- Generated by deploy/local/stack.sh: the broker logs to files under ${sys:kafka.logs.dir}. -->
<Configuration status="WARN">
  <Appenders>
    <RollingFile name="server" fileName="${sys:kafka.logs.dir}/server.log" filePattern="${sys:kafka.logs.dir}/server.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="100MB"/>
      <DefaultRolloverStrategy max="5"/>
    </RollingFile>
    <RollingFile name="controller" fileName="${sys:kafka.logs.dir}/controller.log" filePattern="${sys:kafka.logs.dir}/controller.log.%i">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
      <SizeBasedTriggeringPolicy size="100MB"/>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
  </Appenders>
  <Loggers>
    <Root level="INFO"><AppenderRef ref="server"/></Root>
    <Logger name="org.apache.kafka.controller" level="INFO" additivity="false"><AppenderRef ref="controller"/></Logger>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log.LogLoader" level="WARN"/>
  </Loggers>
</Configuration>
EOF
	mv "$KAFKA_DIR/log4j2.xml.new" "$KAFKA_DIR/log4j2.xml"
	cat >"$KAFKA_DIR/tools-log4j2.xml" <<'EOF'
<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders><Console name="stderr" target="SYSTEM_ERR"><PatternLayout pattern="[%d] %p %m (%c)%n"/></Console></Appenders>
  <Loggers><Root level="ERROR"><AppenderRef ref="stderr"/></Root></Loggers>
</Configuration>
EOF
}

kafka_format() {
	[[ -f $KAFKA_DATA/meta.properties ]] && return 0
	local id_file=$KAFKA_DIR/cluster.id
	if [[ ! -s $id_file ]]; then
		kafka_java kafka.tools.StorageTool random-uuid >"$id_file.new" || die "StorageTool random-uuid failed"
		mv "$id_file.new" "$id_file"
	fi
	log "formatting KRaft storage in $KAFKA_DATA (cluster id $(cat "$id_file"))"
	kafka_java kafka.tools.StorageTool format --ignore-formatted \
		--cluster-id "$(cat "$id_file")" --config "$KAFKA_CONF" >>"$KAFKA_LOG_DIR/format.log" 2>&1 || {
		tail -n 20 "$KAFKA_LOG_DIR/format.log" >&2
		die "formatting Kafka storage failed (see $KAFKA_LOG_DIR/format.log)"
	}
}

# kafka_running: the broker this stack dir started is alive (prints its pid).
kafka_running() {
	[[ -f $KAFKA_PID ]] || return 1
	local pid
	pid=$(cat "$KAFKA_PID" 2>/dev/null) || return 1
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'kafka\.Kafka' || return 1
	echo "$pid"
}

kafka_start() {
	local pid
	if pid=$(kafka_running); then return 0; fi
	if tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
		log "something already listens on $KAFKA_HOST:$KAFKA_PORT that this stack ($STACK_DIR) did not start; checking it is a Kafka broker"
		return 0
	fi
	tcp_open 127.0.0.1 "$CONTROLLER_PORT" && die "port $CONTROLLER_PORT (controller listener) is taken by another process; set KEEL_KAFKA_CONTROLLER_PORT"
	kafka_format
	log "starting Kafka $KAFKA_VERSION on $KAFKA_HOST:$KAFKA_PORT (controller 127.0.0.1:$CONTROLLER_PORT)"
	rm -f "$KAFKA_PID"
	# Remember where the logs end so a failure shows only this start's lines.
	KAFKA_OUT_FROM=$(($(stat -c %s "$KAFKA_OUT" 2>/dev/null || echo 0) + 1))
	KAFKA_SERVER_LOG_FROM=$(($(stat -c %s "$KAFKA_LOG_DIR/server.log" 2>/dev/null || echo 0) + 1))
	# setsid: own session, so the broker outlives the shell, make and CI steps;
	# the subshell writes its own pid before exec-ing java, and the lock fd is closed.
	# SC2016: $$ and $@ are the inner bash's; SC2086: KAFKA_HEAP is a list of JVM options.
	# shellcheck disable=SC2016,SC2086
	setsid bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
		java $KAFKA_HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
		-Dkafka.logs.dir="$KAFKA_LOG_DIR" \
		-Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.xml" \
		-cp "$KAFKA_LIB/*" kafka.Kafka "$KAFKA_CONF" \
		</dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
	for _ in $(seq 1 50); do
		[[ -s $KAFKA_PID ]] && break
		sleep 0.1
	done
}

KAFKA_OUT_FROM=1
KAFKA_SERVER_LOG_FROM=1
kafka_fail() {
	log "$1"
	local f from lines
	for f in "$KAFKA_OUT:$KAFKA_OUT_FROM" "$KAFKA_LOG_DIR/server.log:$KAFKA_SERVER_LOG_FROM"; do
		from=${f##*:} f=${f%:*}
		lines=$(tail -c "+$from" "$f" 2>/dev/null | tail -n 25) || true
		[[ -n $lines ]] || continue
		printf -- '--- last lines of %s ---\n%s\n' "$f" "$lines" >&2
	done
	exit 1
}

# kafka_wait: the broker answers an admin request (metadata listing topics).
kafka_wait() {
	local deadline=$((SECONDS + TIMEOUT)) managed=$1 out
	while ((SECONDS < deadline)); do
		if [[ $managed == 1 ]] && ! kafka_running >/dev/null && ! tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
			kafka_fail "Kafka exited while starting"
		fi
		if tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
			if [[ ! -f $KAFKA_MARKER ]]; then
				return 0 # external broker and no admin tool here: a TCP answer is all we can check
			fi
			if out=$(timeout 30 "${KAFKA_TOOL_JAVA[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
				--bootstrap-server "$KAFKA_BROKERS" 2>&1) &&
				grep -q '(id: ' <<<"$out"; then
				return 0
			fi
		fi
		sleep 1
	done
	[[ $managed == 1 ]] && kafka_fail "Kafka did not answer on $KAFKA_BROKERS within ${TIMEOUT}s"
	die "Kafka did not answer on $KAFKA_BROKERS within ${TIMEOUT}s${out:+: $(tail -n 5 <<<"$out")}"
}

kafka_stop() {
	local pid
	if ! pid=$(kafka_running); then
		rm -f "$KAFKA_PID"
		log "Kafka is not running (from $STACK_DIR)"
		return 0
	fi
	log "stopping Kafka (pid $pid)"
	kill -TERM "$pid"
	for _ in $(seq 1 600); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$pid" 2>/dev/null; then
		log "Kafka did not stop within 60s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$KAFKA_PID"
}

# ---------------------------------------------------------------- postgres

# pg_cluster: "VERSION NAME STATUS" of the cluster on PG_PORT, if any.
pg_cluster() {
	pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2, $4; exit }'
}

pg_super() { # psql as the postgres superuser over the local socket
	runuser -u postgres -- psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" -d postgres "$@"
}

pg_tcp_ok() {
	PGPASSWORD=$PG_PASSWORD PGCONNECT_TIMEOUT=3 psql -X -q -w -tA \
		-h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d "$1" -c 'select 1' >/dev/null 2>&1
}

pg_start() {
	local c ver name status
	c=$(pg_cluster)
	if [[ -z $c ]]; then
		ver=$(find /usr/lib/postgresql -maxdepth 1 -mindepth 1 -printf '%f\n' 2>/dev/null | sort -n | tail -n1)
		[[ -n $ver ]] || die "no PostgreSQL server installed under /usr/lib/postgresql"
		if pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -qx "$ver main"; then
			die "PostgreSQL cluster $ver/main exists but not on port $PG_PORT; set KEEL_PG_URL to its port"
		fi
		log "creating PostgreSQL $ver cluster 'main' on port $PG_PORT"
		pg_createcluster --port "$PG_PORT" "$ver" main >/dev/null 9>&-
		c=$(pg_cluster)
	fi
	read -r ver name status <<<"$c"
	if [[ $status != online* ]]; then
		log "starting PostgreSQL $ver/$name on port $PG_PORT"
		pg_ctlcluster "$ver" "$name" start 9>&-
	fi
	pg_wait_local
	local maxc
	maxc=$(pg_super -tAc 'show max_connections')
	if [[ $maxc != "$PG_MAX_CONNECTIONS" ]]; then
		log "raising max_connections from $maxc to $PG_MAX_CONNECTIONS (restarts PostgreSQL $ver/$name)"
		pg_super -c "ALTER SYSTEM SET max_connections = $PG_MAX_CONNECTIONS"
		pg_ctlcluster "$ver" "$name" restart 9>&-
		pg_wait_local
	fi
	# Loopback only: TLS here costs ~30% of a client's CPU per statement
	# (measured by make bench) and protects nothing. A managed server keeps
	# its own setting (KEEL_EXTERNAL_STACK=1 never gets here).
	if [[ $(pg_super -tAc 'show ssl') == on ]]; then
		log "turning TLS off on the local PostgreSQL (loopback only)"
		pg_super -c "ALTER SYSTEM SET ssl = off" -c "SELECT pg_reload_conf()" >/dev/null
	fi
}

pg_wait_local() {
	local deadline=$((SECONDS + TIMEOUT))
	until pg_isready -q -h "$PG_HOST" -p "$PG_PORT"; do
		((SECONDS < deadline)) || {
			tail -n 20 /var/log/postgresql/postgresql-*-main.log >&2 2>/dev/null || true
			die "PostgreSQL did not answer on $PG_HOST:$PG_PORT within ${TIMEOUT}s"
		}
		sleep 0.3
	done
}

pg_provision() {
	local db
	# Role: create when missing; fix attributes only when they differ; reset the
	# password only when a password login over TCP fails.
	pg_super -v role="$PG_USER" -v pw="$PG_PASSWORD" <<'EOF' || die "could not create/alter role $PG_USER"
SELECT format('CREATE ROLE %I LOGIN CREATEDB NOSUPERUSER PASSWORD %L', :'role', :'pw')
 WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN CREATEDB NOSUPERUSER', :'role')
  FROM pg_roles WHERE rolname = :'role' AND (NOT rolcanlogin OR NOT rolcreatedb OR rolsuper) \gexec
-- The event store's read horizon leaves out transactions it sees running in
-- other databases (events/store/pg); seeing other roles' sessions needs this.
SELECT format('GRANT pg_read_all_stats TO %I', :'role')
 WHERE NOT pg_has_role(:'role', 'pg_read_all_stats', 'MEMBER') \gexec
EOF
	if ! pg_tcp_ok postgres; then
		log "setting the password of role $PG_USER"
		pg_super -v role="$PG_USER" -v pw="$PG_PASSWORD" <<<"SELECT format('ALTER ROLE %I PASSWORD %L', :'role', :'pw') \gexec"
	fi
	for db in $PG_DATABASES; do
		pg_super -v role="$PG_USER" -v db="$db" <<'EOF' || die "could not create database $db"
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'role')
 WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'role')
  FROM pg_database WHERE datname = :'db' AND pg_get_userbyid(datdba) <> :'role' \gexec
EOF
	done
	pg_tcp_ok "$PG_DB" || die "password login over TCP fails: PGPASSWORD=... psql -h $PG_HOST -p $PG_PORT -U $PG_USER $PG_DB (check pg_hba.conf allows scram-sha-256 for host $PG_HOST)"
}

# pg_wait_external: only wait for the given server to accept the given credentials.
pg_wait_external() {
	local deadline=$((SECONDS + TIMEOUT))
	while ((SECONDS < deadline)); do
		if command -v psql >/dev/null; then
			PGCONNECT_TIMEOUT=3 psql -X -q -w -tA "$PG_URL" -c 'select 1' >/dev/null 2>&1 && return 0
		elif tcp_open "$PG_HOST" "$PG_PORT"; then
			return 0
		fi
		sleep 1
	done
	die "PostgreSQL did not accept $PG_URL_SHOWN within ${TIMEOUT}s"
}

pg_stop() {
	local c ver name status
	c=$(pg_cluster)
	[[ -n $c ]] || { log "no PostgreSQL cluster on port $PG_PORT"; return 0; }
	read -r ver name status <<<"$c"
	if [[ $status == online* ]]; then
		log "stopping PostgreSQL $ver/$name"
		pg_ctlcluster "$ver" "$name" stop 9>&-
	else
		log "PostgreSQL $ver/$name is not running"
	fi
}

# ---------------------------------------------------------------- commands

# lock: serialise concurrent up/down (parallel `make test` runs) on fd 9. Every
# daemon started below gets `9>&-` so it does not inherit (and hold) the lock.
lock() {
	mkdir -p "$STACK_DIR"
	exec 9>"$STACK_DIR/stack.lock"
	if ! flock -n 9; then
		log "waiting for another stack.sh (lock $STACK_DIR/stack.lock)"
		flock -w 600 9 || die "another stack.sh holds $STACK_DIR/stack.lock"
	fi
}

cmd_up() {
	local t0=$SECONDS
	if [[ $EXTERNAL == 1 ]]; then
		log "KEEL_EXTERNAL_STACK=1: waiting for Kafka at $KAFKA_BROKERS and PostgreSQL at $PG_URL_SHOWN"
		pg_wait_external
		kafka_wait 0
		log "external stack answers"
		return 0
	fi
	lock # before apt-get too: concurrent first runs must not race on dpkg
	ensure_packages
	pg_start
	pg_provision
	kafka_fetch
	kafka_write_config
	kafka_start
	kafka_wait 1
	log "up in $((SECONDS - t0))s: Kafka $KAFKA_BROKERS, PostgreSQL $PG_URL_SHOWN (databases: $PG_DATABASES)"
}

cmd_down() {
	if [[ $EXTERNAL == 1 ]]; then
		log "KEEL_EXTERNAL_STACK=1: nothing to stop"
		return 0
	fi
	lock
	kafka_stop
	if command -v pg_lsclusters >/dev/null; then pg_stop; fi
}

cmd_status() {
	local ok=0 pid c
	if [[ $EXTERNAL == 1 ]]; then
		echo "mode:       external (KEEL_EXTERNAL_STACK=1)"
	fi
	if pid=$(kafka_running); then
		echo "kafka:      running   $KAFKA_BROKERS (controller 127.0.0.1:$CONTROLLER_PORT) pid $pid, kafka_2.13 $KAFKA_VERSION"
	elif tcp_open "$KAFKA_HOST" "$KAFKA_PORT"; then
		echo "kafka:      listening $KAFKA_BROKERS (not started from $STACK_DIR)"
	else
		echo "kafka:      stopped   $KAFKA_BROKERS"
		ok=1
	fi
	c=
	if command -v pg_lsclusters >/dev/null; then c=$(pg_cluster); fi
	if [[ -n $c && $(awk '{print $3}' <<<"$c") == online* ]]; then
		echo "postgresql: running   $PG_URL_SHOWN (cluster $(awk '{print $1 "/" $2}' <<<"$c"))"
	elif tcp_open "$PG_HOST" "$PG_PORT"; then
		echo "postgresql: listening $PG_URL_SHOWN"
	else
		echo "postgresql: stopped   $PG_URL_SHOWN${c:+ (cluster $(awk '{print $1 "/" $2}' <<<"$c"))}"
		ok=1
	fi
	echo "databases:  $PG_DATABASES"
	echo "stack dir:  $STACK_DIR (kafka data: $KAFKA_DATA, logs: $LOG_DIR)"
	return $ok
}

case ${1:-} in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
*)
	echo "usage: $0 up|down|status" >&2
	exit 2
	;;
esac
