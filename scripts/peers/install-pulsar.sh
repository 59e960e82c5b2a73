#!/usr/bin/env bash
# Install Apache Pulsar standalone (broker + in-JVM bookie + RocksDB metadata) from Maven jars.
#
#   scripts/peers/install-pulsar.sh           # idempotent; second run is instant
#   PULSAR_VERSION=4.0.7 scripts/peers/install-pulsar.sh
#
# Result: $PEERS_DIR/pulsar/<ver>/{lib,bin,config}, $PEERS_DIR/pulsar/current -> <ver>
#   bin/pulsar-standalone --port P --http-port H --bookie-port B --data DIR [--wipe] [--conf k=v ...]
#   bin/pulsar-run-class CLASS [ARGS...]
#   bin/pulsar-smoke-client SERVICE_URL TOPIC MESSAGE   (Java client over the binary protocol)
#
# Version notes (checked 2026-11 against the Maven Central served here):
#   4.0.8, 4.0.6: org.apache.pulsar:jetcd-core-shaded and pulsar-opentelemetry jars are not served.
#   4.0.7: the whole pulsar-broker tree resolves (~317 jars, ~235 MB; bookkeeper-server 4.17.2,
#          rocksdbjni 7.10.2 and the functions worker come transitively). Needs Java 17.
#   pulsar-client-tools 4.0.7 is not served, hence the small generated Java smoke client.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=pulsar

PULSAR_VERSION="${PULSAR_VERSION:-4.0.7}"
# Pulsar 4.0 uses slf4j-api 2.0.x -> the log4j-slf4j2-impl binding; bookkeeper pulls log4j 2.18,
# so pin api/core/binding to one version.
LOG4J_VERSION="${PULSAR_LOG4J_VERSION:-2.25.4}"
RECIPE_REV=4

COMP="$PEERS_DIR/pulsar"
DEST="$COMP/$PULSAR_VERSION"
STAMP="$(stamp pulsar "$PULSAR_VERSION" "$RECIPE_REV log4j=$LOG4J_VERSION")"

if is_installed "$DEST" "$STAMP"; then
  set_current "$COMP" "$PULSAR_VERSION"
  log "pulsar $PULSAR_VERSION already installed at $DEST"
  exit 0
fi

maven_dist "$DEST" pulsar "$PULSAR_VERSION" "\
    <dependency><groupId>org.apache.pulsar</groupId><artifactId>pulsar-broker</artifactId><version>$PULSAR_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-api</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>$LOG4J_VERSION</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId><version>$LOG4J_VERSION</version></dependency>" \
  "org.apache.pulsar.PulsarStandaloneStarter org.apache.bookkeeper.proto.BookieServer
   org.rocksdb.RocksDB org.apache.pulsar.client.api.PulsarClient
   org.apache.logging.slf4j.SLF4JServiceProvider" \
  "pulsar-broker $PULSAR_VERSION's tree lacks it: add the artifact that provides it to the pom in install-pulsar.sh"

write_log4j2 "$DEST/config/log4j2.properties" WARN
# java.util.logging (Jersey's "JAXBContext implementation could not be found") -> quiet
cat > "$DEST/config/jul.properties" <<'EOF'
handlers = java.util.logging.ConsoleHandler
.level = SEVERE
EOF

# standalone.conf template; @PORT@ etc. are filled in by bin/pulsar-standalone.
# Unset keys take ServiceConfiguration defaults; the in-JVM bookie reads the same file.
cat > "$DEST/config/standalone.conf.template" <<'EOF'
clusterName=standalone
bindAddress=@HOST@
advertisedAddress=@HOST@
brokerServicePort=@PORT@
webServicePort=@HTTP_PORT@
bookiePort=@BOOKIE_PORT@
# The in-JVM bookie (BKCluster) reads this file too. Without allowEphemeralPorts=true it ignores
# --bookkeeper-port and takes a random port; without listeningInterface it binds 0.0.0.0.
allowEphemeralPorts=true
listeningInterface=@LOOPBACK_IF@
managedLedgerDefaultEnsembleSize=1
managedLedgerDefaultWriteQuorum=1
managedLedgerDefaultAckQuorum=1
allowAutoTopicCreation=true
allowAutoTopicCreationType=non-partitioned
brokerDeleteInactiveTopicsEnabled=false
transactionCoordinatorEnabled=false
webSocketServiceEnabled=false
functionsWorkerEnabled=false
systemTopicEnabled=true
topicLevelPoliciesEnabled=true
allowLoopback=true
journalSyncData=false
diskUsageThreshold=0.99
diskUsageWarnThreshold=0.99
dbStorage_writeCacheMaxSizeMb=32
dbStorage_readAheadCacheMaxSizeMb=32
dbStorage_rocksDB_blockCacheSize=16777216
managedLedgerCacheSizeMB=64
enableReplicatedSubscriptions=false
loadBalancerEnabled=false
exposeTopicLevelMetricsInPrometheus=false
httpServerEnabled=false
statsProviderClass=org.apache.bookkeeper.stats.NullStatsProvider
EOF

# ---- bin/pulsar-run-class ------------------------------------------------------------------
cat > "$DEST/bin/pulsar-run-class" <<'EOF'
#!/usr/bin/env bash
# pulsar-run-class CLASS [ARGS...] — run a class from this Pulsar install in the foreground.
# Env: JAVA, PULSAR_MEM (heap/direct), PULSAR_EXTRA_OPTS, PULSAR_LOG_LEVEL (WARN), PULSAR_LOG4J_CONFIG
set -euo pipefail
HOME_DIR="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
[[ $# -ge 1 ]] || { echo "usage: $0 CLASS [ARGS...]" >&2; exit 2; }
cls="$1"; shift
: "${PULSAR_MEM:=-Xms256m -Xmx768m -XX:MaxDirectMemorySize=512m}"
# --add-opens as in upstream bin/pulsar: without them LinuxInfoUtils / JvmDefaultGCMetricsLogger
# log IllegalAccessException stack traces and Netty/RocksDB fall back to slower paths.
# shellcheck disable=SC2086
exec "${JAVA:-java}" $PULSAR_MEM -XX:+UseG1GC -XX:MaxGCPauseMillis=10 -XX:+ExplicitGCInvokesConcurrent \
  -Djava.awt.headless=true -Dio.netty.tryReflectionSetAccessible=true \
  -Dpulsar.allocator.exit_on_oom=true -Dio.netty.recycler.maxCapacityPerThread=4096 \
  --add-opens java.base/java.io=ALL-UNNAMED \
  --add-opens java.base/java.util.zip=ALL-UNNAMED \
  --add-opens java.base/java.nio=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.misc=ALL-UNNAMED \
  --add-opens java.base/jdk.internal.platform=ALL-UNNAMED \
  --add-opens java.base/sun.net=ALL-UNNAMED \
  --add-opens java.management/sun.management=ALL-UNNAMED \
  --add-opens jdk.management/com.sun.management.internal=ALL-UNNAMED \
  -Dlog4j2.configurationFile="${PULSAR_LOG4J_CONFIG:-$HOME_DIR/config/log4j2.properties}" \
  -Dpeers.log.level="${PULSAR_LOG_LEVEL:-WARN}" \
  -Djava.util.logging.config.file="$HOME_DIR/config/jul.properties" \
  ${PULSAR_EXTRA_OPTS:-} -cp "$HOME_DIR/lib/*" "$cls" "$@"
EOF

# ---- bin/pulsar-standalone -----------------------------------------------------------------
cat > "$DEST/bin/pulsar-standalone" <<'EOF'
#!/usr/bin/env bash
# pulsar-standalone --port P --http-port H --bookie-port B --data DIR [--wipe] [--host H] [--conf k=v ...]
# Broker + one in-JVM bookie + RocksDB metadata store (no ZooKeeper), no functions worker,
# no stream storage. Foreground. Data lives in DIR (kept across runs unless --wipe).
# Ready when GET http://H:HTTP/admin/v2/clusters lists "standalone" (cluster and public/default
# are created by the starter a moment after the HTTP port opens).
set -euo pipefail
BIN="$(cd "$(dirname "$(readlink -f "$0")")" && pwd)"
HOME_DIR="$(cd "$BIN/.." && pwd)"
usage() { echo "usage: $0 --port P --http-port H --bookie-port B --data DIR [--wipe] [--host H] [--conf k=v ...]" >&2; exit 2; }
port='' http='' bookie='' data='' host=127.0.0.1 wipe=() confs=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    --http-port) http="$2"; shift 2 ;;
    --bookie-port) bookie="$2"; shift 2 ;;
    --data) data="$2"; shift 2 ;;
    --host) host="$2"; shift 2 ;;
    --wipe) wipe=(--wipe-data); shift ;;
    --conf) confs+=("$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "unknown argument: $1" >&2; usage ;;
  esac
done
[[ -n "$port" && -n "$http" && -n "$bookie" && -n "$data" ]] || usage
mkdir -p "$data"
data="$(cd "$data" && pwd)"
conf="$data/standalone.conf"
# loopback interface name (IFF_LOOPBACK = 0x8) for the bookie's bind address; Linux: lo
lo_if=lo
for n in /sys/class/net/*; do
  f="$(cat "$n/flags" 2>/dev/null || echo 0)"
  if (( f & 0x8 )); then lo_if="${n##*/}"; break; fi
done
sed -e "s/@LOOPBACK_IF@/$lo_if/g" -e "s/@HOST@/$host/g" -e "s/@PORT@/$port/g" -e "s/@HTTP_PORT@/$http/g" -e "s/@BOOKIE_PORT@/$bookie/g" \
  "$HOME_DIR/config/standalone.conf.template" > "$conf"
for kv in "${confs[@]}"; do printf '%s\n' "$kv" >> "$conf"; done
# The starter resolves some paths (e.g. data/standalone) against the working directory.
cd "$data"
exec "$BIN/pulsar-run-class" org.apache.pulsar.PulsarStandaloneStarter \
  -c "$conf" --no-functions-worker --no-stream-storage -a "$host" \
  --metadata-dir "$data/metadata" --bookkeeper-dir "$data/bookkeeper" --bookkeeper-port "$bookie" \
  "${wipe[@]}"
EOF

# ---- bin/pulsar-smoke-client: produce one message, consume it back (binary protocol) --------
cat > "$DEST/config/PulsarSmoke.java" <<'EOF'
import java.util.concurrent.TimeUnit;
import org.apache.pulsar.client.api.*;

/** PulsarSmoke SERVICE_URL TOPIC MESSAGE: send MESSAGE, read it back, exit 0 on match. */
public class PulsarSmoke {
  public static void main(String[] a) throws Exception {
    if (a.length != 3) { System.err.println("usage: PulsarSmoke SERVICE_URL TOPIC MESSAGE"); System.exit(2); }
    try (PulsarClient c = PulsarClient.builder().serviceUrl(a[0])
            .operationTimeout(20, TimeUnit.SECONDS).build();
         Consumer<String> cons = c.newConsumer(Schema.STRING).topic(a[1]).subscriptionName("smoke")
            .subscriptionInitialPosition(SubscriptionInitialPosition.Earliest).subscribe();
         Producer<String> prod = c.newProducer(Schema.STRING).topic(a[1]).create()) {
      MessageId id = prod.send(a[2]);
      Message<String> m = cons.receive(20, TimeUnit.SECONDS);
      if (m == null) { System.err.println("no message received"); System.exit(1); }
      cons.acknowledge(m);
      System.out.println("sent " + id + " received " + m.getMessageId() + " value " + m.getValue());
      System.exit(a[2].equals(m.getValue()) ? 0 : 1);
    }
  }
}
EOF
cat > "$DEST/bin/pulsar-smoke-client" <<'EOF'
#!/usr/bin/env bash
# pulsar-smoke-client SERVICE_URL TOPIC MESSAGE — Java client produce+consume (single-file source launch)
HOME_DIR="$(cd "$(dirname "$(readlink -f "$0")")/.." && pwd)"
export PULSAR_MEM="${PULSAR_MEM:--Xmx256m -XX:TieredStopAtLevel=1}"
exec "$HOME_DIR/bin/pulsar-run-class" "$HOME_DIR/config/PulsarSmoke.java" "$@"
EOF
chmod +x "$DEST"/bin/*

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$PULSAR_VERSION"
log "pulsar $PULSAR_VERSION installed at $DEST ($(count_jars "$DEST/lib") jars, $(du -sh "$DEST/lib" | cut -f1))"
