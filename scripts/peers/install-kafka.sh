#!/usr/bin/env bash
# Install Apache Kafka (KRaft broker + tools + MirrorMaker 2) from Maven Central jars.
#
#   scripts/peers/install-kafka.sh            # idempotent; second run is instant
#   KAFKA_VERSION=4.3.1 scripts/peers/install-kafka.sh
#
# Result: $PEERS_DIR/kafka/<ver>/{lib,bin,config}, $PEERS_DIR/kafka/current -> <ver>
#   bin/kafka-server --port P --controller-port C --data DIR [--node-id N] [--override k=v ...]
#   bin/kafka-topics | kafka-console-producer | kafka-console-consumer   (tools, same args as upstream)
#   bin/kafka-mirror-maker2 mm2.properties [--clusters X]
#   bin/kafka-run-class CLASS [ARGS...]
#
# Version notes (checked 2026-11 against the Maven Central served here):
#   4.4.0: connect-mirror 4.4.0 is not served -> no MirrorMaker 2.
#   4.2.x: connect-mirror-client 4.2.1 is not served.
#   4.3.1: kafka_2.13, kafka-tools, connect-mirror all resolve; classes are Java 17 (major 61).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=kafka

KAFKA_VERSION="${KAFKA_VERSION:-4.3.1}"
# Kafka 4.3 uses slf4j-api 1.7.36 and log4j 2.25.4; the slf4j binding is not in the POMs.
LOG4J_VERSION="${KAFKA_LOG4J_VERSION:-2.25.4}"
RECIPE_REV=6   # bump when the generated files change, to force a reinstall

COMP="$PEERS_DIR/kafka"
DEST="$COMP/$KAFKA_VERSION"
STAMP="$(stamp kafka "$KAFKA_VERSION" "$RECIPE_REV log4j=$LOG4J_VERSION")"

if is_installed "$DEST" "$STAMP"; then
  set_current "$COMP" "$KAFKA_VERSION"
  log "kafka $KAFKA_VERSION already installed at $DEST"
  exit 0
fi

maven_dist "$DEST" kafka "$KAFKA_VERSION" "\
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>$KAFKA_VERSION</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror</artifactId><version>$KAFKA_VERSION</version></dependency>
    <!-- releaseOnly in Kafka's build, so absent from the POMs: without it SLF4J logs to NOP -->
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>" \
  "kafka.Kafka kafka.tools.StorageTool org.apache.kafka.tools.TopicCommand
   org.apache.kafka.tools.ConsoleProducer org.apache.kafka.tools.consumer.ConsoleConsumer
   org.apache.kafka.connect.mirror.MirrorMaker org.apache.logging.slf4j.Log4jLoggerFactory" \
  "the jar layout of Kafka $KAFKA_VERSION differs: find the class with 'unzip -l' and update install-kafka.sh"

write_log4j2 "$DEST/config/log4j2.properties" WARN

# ---- bin/kafka-run-class: common JVM launcher -------------------------------------------
cat > "$DEST/bin/kafka-run-class" <<'EOF'
#!/usr/bin/env bash
# kafka-run-class CLASS [ARGS...] — run a class from this Kafka install in the foreground.
# Env: JAVA (default java), KAFKA_HEAP_OPTS, KAFKA_JVM_OPTS (extra), KAFKA_LOG4J_CONFIG, KAFKA_LOG_LEVEL
set -euo pipefail
HOME_DIR="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 CLASS [ARGS...]" >&2; exit 2; }
cls="$1"; shift
: "${KAFKA_HEAP_OPTS:=-Xms256m -Xmx512m}"
log4j="${KAFKA_LOG4J_CONFIG:-$HOME_DIR/config/log4j2.properties}"
# shellcheck disable=SC2086
exec "${JAVA:-java}" $KAFKA_HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
  -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
  -XX:TieredStopAtLevel="${KAFKA_TIERED_STOP:-4}" -Xss1m \
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$log4j" \
  -Dpeers.log.level="${KAFKA_LOG_LEVEL:-WARN}" ${KAFKA_JVM_OPTS:-} \
  -cp "$HOME_DIR/lib/*" "$cls" "$@"
EOF

# ---- bin/kafka-server -------------------------------------------------------------------
cat > "$DEST/bin/kafka-server" <<'EOF'
#!/usr/bin/env bash
# kafka-server --port P --controller-port C --data DIR [--node-id N] [--override k=v ...]
# Single-node KRaft (combined broker+controller, static quorum) on 127.0.0.1, foreground.
# Formats DIR on first use (cluster id kept in DIR/cluster.id); later runs reuse the data.
set -euo pipefail
BIN="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
usage() { echo "usage: $0 --port P --controller-port C --data DIR [--node-id N] [--host H] [--override k=v ...]" >&2; exit 2; }
port='' cport='' data='' node=1 host=127.0.0.1 overrides=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --controller-port) cport="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --node-id) node="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --override) overrides+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n "$port" && -n "$cport" && -n "$data" ]] || usage
mkdir -p "$data/logs"
data="$(cd "$data" && pwd)"
cfg="$data/server.properties"
cat > "$cfg" <<CFG
process.roles=broker,controller
node.id=$node
controller.quorum.voters=$node@$host:$cport
listeners=PLAINTEXT://$host:$port,CONTROLLER://$host:$cport
advertised.listeners=PLAINTEXT://$host:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$data/logs
num.partitions=1
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
delete.topic.enable=true
CFG
for kv in "${overrides[@]}"; do printf '%s\n' "$kv" >> "$cfg"; done
if [[ ! -s "$data/cluster.id" ]]; then
  # Any 22-char base64url UUID works; StorageTool random-uuid would cost a JVM start.
  # Like Kafka's Uuid.randomUuid, never start with '-': the storage tool would read such an
  # id as an option (one start in 64 failed with "--cluster-id: expected one argument").
  id=-
  while [[ "$id" == -* ]]; do
    id="$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=\n' | cut -c1-22)"
  done
  [[ ${#id} == 22 ]] || { echo "kafka-server: cannot make a cluster id (got '$id')" >&2; exit 1; }
  printf '%s\n' "$id" > "$data/cluster.id"
fi
if [[ ! -f "$data/logs/meta.properties" ]]; then
  KAFKA_HEAP_OPTS="-Xmx256m" KAFKA_TIERED_STOP=1 "$BIN/kafka-run-class" kafka.tools.StorageTool format \
    --cluster-id="$(cat "$data/cluster.id")" -c "$cfg" --ignore-formatted >"$data/format.log" 2>&1 \
    || { cat "$data/format.log" >&2; echo "kafka-server: storage format failed (see above)" >&2; exit 1; }
fi
exec "$BIN/kafka-run-class" kafka.Kafka "$cfg"
EOF

# ---- tool wrappers ------------------------------------------------------------------------
wrap() { # wrap NAME CLASS [HEAP]
  cat > "$DEST/bin/$1" <<EOF
#!/usr/bin/env bash
# $1 — runs $2 (same arguments as the upstream bin/$1.sh)
export KAFKA_HEAP_OPTS="\${KAFKA_HEAP_OPTS:-${3:--Xmx256m}}"
export KAFKA_TIERED_STOP="\${KAFKA_TIERED_STOP:-1}"   # short-lived tool: C1 only starts faster
exec "\$(dirname "\$(readlink -f "\$0")")/kafka-run-class" $2 "\$@"
EOF
}
wrap kafka-topics org.apache.kafka.tools.TopicCommand
wrap kafka-console-producer org.apache.kafka.tools.ConsoleProducer
wrap kafka-console-consumer org.apache.kafka.tools.consumer.ConsoleConsumer
wrap kafka-storage kafka.tools.StorageTool
cat > "$DEST/bin/kafka-mirror-maker2" <<'EOF'
#!/usr/bin/env bash
# kafka-mirror-maker2 mm2.properties [--clusters X] — MirrorMaker 2 (dedicated mode), foreground
export KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}"
exec "$(dirname "$(readlink -f "$0")")/kafka-run-class" org.apache.kafka.connect.mirror.MirrorMaker "$@"
EOF
chmod +x "$DEST"/bin/*

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$KAFKA_VERSION"
log "kafka $KAFKA_VERSION installed at $DEST ($(count_jars "$DEST/lib") jars, $(du -sh "$DEST/lib" | cut -f1))"
