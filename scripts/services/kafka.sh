#!/usr/bin/env bash
# Apache Kafka 4.x, single-node KRaft (broker+controller in one JVM), jars from
# Maven Central. Broker on 127.0.0.1:${DF_KAFKA_PORT:-59092}, controller on
# 127.0.0.1:${DF_KAFKA_CONTROLLER_PORT:-59093}. The broker advertises
# 127.0.0.1:${DF_KAFKA_ADVERTISED_PORT:-$DF_KAFKA_PORT} to clients (another port
# only to put a proxy in front of every client connection, as the network-fault
# tests do).
# usage: kafka.sh [start|stop|status]   — start prints the bootstrap address as the last stdout line.
#
# The jars are cached in <folder>/lib (fetched once with Maven); they also give
# the command-line tools, e.g.
#   java -cp '<folder>/lib/*' org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:59092 --list
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ACTION="${1:-start}"
PORT="${DF_KAFKA_PORT:-59092}"
CPORT="${DF_KAFKA_CONTROLLER_PORT:-59093}"
ADVERTISED_PORT="${DF_KAFKA_ADVERTISED_PORT:-$PORT}"
VERSION="${DF_KAFKA_VERSION:-4.1.0}"
LOG4J_VERSION=2.24.3 # what kafka-server 4.1.0 depends on; Kafka 4.x logs via slf4j 1.7 -> log4j-slf4j-impl
URL="127.0.0.1:${PORT}"

df_init kafka
LIB="$DF_SVC_DIR/lib"
LIB_STAMP="$DF_SVC_DIR/lib.version"
PROPS="$DF_SVC_DIR/server.properties"
LOG4J="$DF_SVC_DIR/log4j2.properties"
LOGFILE="$DF_SVC_DIR/kafka.log"
OUTLOG="$DF_SVC_DIR/kafka.out"
PIDFILE="$DF_SVC_DIR/kafka.pid"
DATA="$DF_SVC_DIR/data"
CLUSTER_ID_FILE="$DF_SVC_DIR/cluster.id"

cd /

running() { df_pid_alive "$PIDFILE" kafka.Kafka; }

ensure_java() {
  local v major
  if command -v java >/dev/null 2>&1; then
    v="$(java -version 2>&1 | sed -n 's/.*version "\([^"]*\)".*/\1/p' | head -n1)"
    major="${v%%.*}"
    [ "$major" = 1 ] && major=8
    if [ -n "$major" ] && [ "$major" -ge 17 ] 2>/dev/null; then return 0; fi
    log "java $v is too old for Kafka 4.x (needs 17+)"
  fi
  df_apt_install openjdk-17-jre-headless
}

fetch_jars() {
  if [ -d "$LIB" ] && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null && [ "$(cat "$LIB_STAMP" 2>/dev/null)" = "$VERSION" ]; then
    return 0
  fi
  df_need_cmd mvn maven
  log "fetching Kafka $VERSION jars with Maven into $LIB (cached afterwards)"
  cat >"$DF_SVC_DIR/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Written by scripts/services/kafka.sh: the jars of a single-node Kafka broker + tools. -->
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 http://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>deltaforge.services</groupId>
  <artifactId>kafka-broker</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
  </dependencies>
</project>
EOF
  rm -rf "$LIB.tmp"
  if ! mvn -B -q -Dstyle.color=never -f "$DF_SVC_DIR/pom.xml" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$LIB.tmp" </dev/null 2>&1 9>&- | sed 's/\x1b\[[0-9;]*m//g' >&2; then
    rm -rf "$LIB.tmp"
    die "mvn could not fetch the Kafka $VERSION jars (see the Maven output above)"
  fi
  rm -rf "$LIB"
  mv "$LIB.tmp" "$LIB"
  echo "$VERSION" >"$LIB_STAMP"
  log "$(find "$LIB" -name '*.jar' | wc -l) jars in $LIB"
}

write_config() {
  # Regenerated on every start so that port overrides take effect.
  cat >"$PROPS" <<EOF
# Written by scripts/services/kafka.sh — do not edit (regenerated on start).
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CPORT
listeners=PLAINTEXT://127.0.0.1:$PORT,CONTROLLER://127.0.0.1:$CPORT
advertised.listeners=PLAINTEXT://127.0.0.1:$ADVERTISED_PORT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
min.insync.replicas=1
group.initial.rebalance.delay.ms=0
EOF
  cat >"$LOG4J" <<EOF
# Written by scripts/services/kafka.sh — broker log at INFO to $LOGFILE.
status = warn
shutdownHook = disable
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = $LOGFILE
appender.file.append = true
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

format_storage() {
  [ -f "$DATA/meta.properties" ] && return 0
  if [ ! -s "$CLUSTER_ID_FILE" ]; then
    head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' >"$CLUSTER_ID_FILE"
  fi
  log "formatting $DATA with cluster id $(cat "$CLUSTER_ID_FILE")"
  mkdir -p "$DATA"
  if ! java -Dlog4j2.configurationFile="$LOG4J" -cp "$LIB/*" kafka.tools.StorageTool format \
    --cluster-id="$(cat "$CLUSTER_ID_FILE")" --config "$PROPS" --ignore-formatted </dev/null >&2 9>&-; then
    die "kafka-storage format failed"
  fi
}

start_kafka() {
  if running; then
    log "already running (pid $(df_pid_of "$PIDFILE"))"
  else
    ensure_java
    fetch_jars
    df_check_port_free "$PORT" DF_KAFKA_PORT
    df_check_port_free "$CPORT" DF_KAFKA_CONTROLLER_PORT
    write_config
    format_storage
    rm -f "$PIDFILE"
    touch "$LOGFILE"
    local offset
    offset=$(($(stat -c %s "$LOGFILE") + 1))
    log "starting Kafka $VERSION on 127.0.0.1:$PORT, controller 127.0.0.1:$CPORT (log $LOGFILE)"
    # The inner bash writes its own pid then execs java, so the pid file holds the JVM's pid.
    # shellcheck disable=SC2016 # $$ and $@ are for the inner bash
    setsid nohup bash -c 'echo $$ >"$0"; exec "$@"' "$PIDFILE" \
      java -Xmx512m -Xms512m -XX:+UseG1GC -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$LOG4J" -Dkafka.logs.dir="$DF_SVC_DIR" \
      -cp "$LIB/*" kafka.Kafka "$PROPS" </dev/null >>"$OUTLOG" 2>&1 9>&- &
    local pid=$! i timeout="${DF_KAFKA_START_TIMEOUT:-120}" ok=0
    for ((i = 0; i < timeout * 10; i++)); do
      if tail -c "+$offset" "$LOGFILE" | grep -q 'Kafka Server started'; then
        ok=1
        break
      fi
      if ! df_proc_alive "$pid" && ! running; then
        tail -n 20 "$OUTLOG" >&2 2>/dev/null || true
        df_fail_with_log "$LOGFILE" "Kafka exited during startup (stdout/stderr in $OUTLOG)"
      fi
      sleep 0.1
    done
    [ "$ok" = 1 ] || df_fail_with_log "$LOGFILE" "Kafka did not log 'Kafka Server started' within ${timeout}s"
  fi
  df_port_busy "$PORT" || df_fail_with_log "$LOGFILE" "Kafka is not listening on 127.0.0.1:$PORT"
  echo "$URL"
}

case "$ACTION" in
  start) start_kafka ;;
  stop) df_stop_pid "$PIDFILE" kafka.Kafka "${DF_KAFKA_STOP_TIMEOUT:-90}" ;;
  status)
    if running; then df_status 0 "$URL" "$(df_pid_of "$PIDFILE")"; else df_status 1; fi
    ;;
  *) df_usage ;;
esac
