#!/usr/bin/env bash
# shellcheck disable=SC2317  # functions are called indirectly (traps, wait_until)
# Start each installed peer server on free 127.0.0.1 ports in a temp dir, wait until it really
# serves (a message goes in and comes back out), measure start-up time and RSS, stop it, and
# print a table. Exit status is non-zero if any server failed.
#
#   scripts/peers/smoke.sh                 # all: kafka pulsar pstest
#   scripts/peers/smoke.sh kafka pstest    # a subset
#   SMOKE_KEEP=1 scripts/peers/smoke.sh    # keep the temp dirs (logs) afterwards
#
# pstest check: publishes and pulls one message with the Python google-cloud-pubsub client
# (venv under $PEERS_DIR/pyvenv, created on first use); if that venv cannot be built it falls
# back to a TCP connect to the printed address (result says which).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=smoke

STARTUP_TIMEOUT="${SMOKE_STARTUP_TIMEOUT:-120}"
servers=("$@")
[[ ${#servers[@]} -gt 0 ]] || servers=(kafka pulsar pstest)

WORK="$(mktemp -d "${TMPDIR:-/tmp}/tributary-smoke.XXXXXX")"
declare -a ROWS=()
declare -a LIVE_PGIDS=()
failed=0

cleanup() {
  local pg
  for pg in "${LIVE_PGIDS[@]}"; do stop_group "$pg"; done
  if [[ -z "${SMOKE_KEEP:-}" ]]; then rm -rf "$WORK"; else log "kept $WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_bg LOGFILE CMD... : run CMD in its own session (process group); sets PID
start_bg() {
  local logf="$1"; shift
  setsid "$@" >"$logf" 2>&1 </dev/null &
  PID=$!
  LIVE_PGIDS+=("$PID")
}

# stop_group PGID: SIGTERM the group, wait up to 20 s, then SIGKILL
stop_group() {
  local pg="$1" i
  kill -TERM -- "-$pg" 2>/dev/null || return 0
  for ((i = 0; i < 80; i++)); do
    kill -0 -- "-$pg" 2>/dev/null || break
    sleep 0.25
  done
  if kill -0 -- "-$pg" 2>/dev/null; then
    warn "process group $pg ignored SIGTERM for 20 s; sending SIGKILL"
    kill -KILL -- "-$pg" 2>/dev/null || true
  fi
  wait "$pg" 2>/dev/null || true
  local kept=()
  for i in "${LIVE_PGIDS[@]}"; do [[ "$i" == "$pg" ]] || kept+=("$i"); done
  LIVE_PGIDS=("${kept[@]}")
}

# wait_until T0 DEADLINE_S PID CMD...: poll CMD until it succeeds; prints elapsed seconds
wait_until() {
  local t0="$1" limit="$2" pid="$3"; shift 3
  while true; do
    if "$@" >/dev/null 2>&1; then
      awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.1f\n", b-a}'
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || return 2
    if awk -v a="$t0" -v b="$(now_s)" -v l="$limit" 'BEGIN{exit !(b-a>l)}'; then return 1; fi
    sleep 0.1
  done
}

tcp_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

row() { ROWS+=("$(printf '%-8s %-10s %9s %8s  %s' "$@")"); }

fail_row() { # fail_row NAME VERSION STARTUP RSS MSG LOGFILE
  row "$1" "$2" "$3" "$4" "FAIL: $5"
  failed=1
  if [[ -f "${6:-}" ]]; then
    warn "$1: last lines of $6:"
    tail -n 25 "$6" >&2 || true
  fi
}

# ------------------------------------------------------------------------------------------
smoke_kafka() {
  local home="$PEERS_DIR/kafka/current" ver d port cport t0 up rss topic=tributary-smoke logf
  [[ -x "$home/bin/kafka-server" ]] || { fail_row kafka - - - "not installed (run scripts/peers/install-kafka.sh)"; return; }
  ver="$(basename "$(readlink -f "$home")")"
  d="$WORK/kafka"; mkdir -p "$d"; logf="$d/server.log"
  port="$(free_port)"; cport="$(free_port)"
  while [[ "$cport" == "$port" ]]; do cport="$(free_port)"; done
  log "kafka $ver: starting on 127.0.0.1:$port (controller $cport)"
  t0="$(now_s)"
  start_bg "$logf" "$home/bin/kafka-server" --port "$port" --controller-port "$cport" --data "$d/data"
  local pid=$PID
  if ! up="$(wait_until "$t0" "$STARTUP_TIMEOUT" "$pid" tcp_open 127.0.0.1 "$port")"; then
    fail_row kafka "$ver" - - "broker port $port never opened" "$logf"; stop_group "$pid"; return
  fi
  # Serving = a topic can be created and a message makes the round trip.
  if ! "$home/bin/kafka-topics" --bootstrap-server "127.0.0.1:$port" --create --if-not-exists \
        --topic "$topic" --partitions 1 --replication-factor 1 >"$d/topics.log" 2>&1; then
    fail_row kafka "$ver" - - "topic create failed" "$d/topics.log"; stop_group "$pid"; return
  fi
  if ! echo "hello-kafka" | "$home/bin/kafka-console-producer" --bootstrap-server "127.0.0.1:$port" \
        --topic "$topic" >"$d/produce.log" 2>&1; then
    fail_row kafka "$ver" - - "produce failed" "$d/produce.log"; stop_group "$pid"; return
  fi
  local got port_up="$up"
  got="$("$home/bin/kafka-console-consumer" --bootstrap-server "127.0.0.1:$port" --topic "$topic" \
        --from-beginning --max-messages 1 --timeout-ms 30000 2>"$d/consume.log" || true)"
  up="$(awk -v a="$t0" -v b="$(now_s)" 'BEGIN{printf "%.1f", b-a}')"
  rss="$(rss_mib "$pid")"
  if [[ "$got" == "hello-kafka" ]]; then
    # start-up = port open; the round trip includes three tool JVM starts, so report both
    row kafka "$ver" "$port_up" "$rss" "OK (topic create+produce+consume via console tools, done at ${up}s)"
  else
    fail_row kafka "$ver" "$up" "$rss" "consumed '${got}' instead of 'hello-kafka'" "$d/consume.log"
  fi
  stop_group "$pid"
}

# ------------------------------------------------------------------------------------------
smoke_pulsar() {
  local home="$PEERS_DIR/pulsar/current" ver d port http bport t0 up rss logf url
  [[ -x "$home/bin/pulsar-standalone" ]] || { fail_row pulsar - - - "not installed (run scripts/peers/install-pulsar.sh)"; return; }
  ver="$(basename "$(readlink -f "$home")")"
  d="$WORK/pulsar"; mkdir -p "$d"; logf="$d/server.log"
  port="$(free_port)"; http="$(free_port)"; bport="$(free_port)"
  url="http://127.0.0.1:$http"
  log "pulsar $ver: starting on 127.0.0.1:$port (http $http, bookie $bport)"
  t0="$(now_s)"
  start_bg "$logf" "$home/bin/pulsar-standalone" --port "$port" --http-port "$http" --bookie-port "$bport" --data "$d/data"
  local pid=$PID
  # (no `curl | grep -q`: under pipefail an early grep exit can fail the pipeline)
  clusters_ready() {
    local c n
    c="$(curl -sf --max-time 2 "$url/admin/v2/clusters")" && [[ "$c" == *'"standalone"'* ]] &&
    n="$(curl -sf --max-time 2 "$url/admin/v2/namespaces/public")" && [[ "$n" == *'public/default'* ]]
  }
  if ! up="$(wait_until "$t0" "$STARTUP_TIMEOUT" "$pid" clusters_ready)"; then
    fail_row pulsar "$ver" - - "admin API never listed cluster 'standalone'" "$logf"; stop_group "$pid"; return
  fi
  rss="$(rss_mib "$pid")"
  local how
  if [[ -x "$home/bin/pulsar-smoke-client" ]]; then
    # Java client over the binary protocol (pulsar://): produce + consume
    if "$home/bin/pulsar-smoke-client" "pulsar://127.0.0.1:$port" persistent://public/default/tributary-smoke \
         hello-pulsar >"$d/client.log" 2>&1; then
      how="binary-protocol produce+consume"
    else
      fail_row pulsar "$ver" "$up" "$rss" "Java client produce/consume failed" "$d/client.log"; stop_group "$pid"; return
    fi
  fi
  # HTTP: create topic + subscription, REST-produce, peek the message back through the bookie.
  local t="$url/admin/v2/persistent/public/default/tributary-smoke-http" got
  if curl -sf -X PUT "$t" >/dev/null &&
     curl -sf -X PUT -H 'Content-Type: application/json' -d '{"entryId":-1,"ledgerId":-1,"partitionIndex":-1}' "$t/subscription/s" >/dev/null &&
     curl -sf -X POST -H 'Content-Type: application/json' -d '{"messages":[{"payload":"hello-http"}]}' \
          "$url/topics/persistent/public/default/tributary-smoke-http" >/dev/null &&
     got="$(curl -sf "$t/subscription/s/position/1")" && [[ "$got" == "hello-http" ]]; then
    how="${how:+$how, }REST produce+peek"
  else
    fail_row pulsar "$ver" "$up" "$rss" "HTTP topic/produce/peek failed (got '${got:-}')" "$logf"; stop_group "$pid"; return
  fi
  rss="$(rss_mib "$pid")"
  row pulsar "$ver" "$up" "$rss" "OK ($how)"
  stop_group "$pid"
}

# ------------------------------------------------------------------------------------------
ensure_pubsub_venv() {
  # The venv comes from install-pyclients.sh (part of install-all.sh).
  local venv="$PEERS_DIR/pyvenv/current"
  if [[ ! -x "$venv/bin/python" ]]; then
    bash "$PEERS_SCRIPTS/install-pyclients.sh" >&2 || return 1
  fi
  echo "$venv/bin/python"
}

smoke_pstest() {
  local home="$PEERS_DIR/pstest/current" ver d t0 up rss logf addr py
  [[ -x "$home/pstest" ]] || { fail_row pstest - - - "not installed (run scripts/peers/install-pstest.sh)"; return; }
  ver="$(basename "$(readlink -f "$home")")"
  d="$WORK/pstest"; mkdir -p "$d"; logf="$d/server.log"
  # venv first, so its creation is not counted as start-up time
  py="$(ensure_pubsub_venv || true)"
  t0="$(now_s)"
  start_bg "$logf" "$home/pstest" --addr 127.0.0.1:0
  local pid=$PID
  addr_printed() { local l; l="$(head -n1 "$logf")"; [[ "$l" == "listening "* ]]; }
  if ! wait_until "$t0" 20 "$pid" addr_printed >/dev/null; then
    fail_row pstest "$ver" - - "no 'listening' line" "$logf"; stop_group "$pid"; return
  fi
  addr="$(head -n1 "$logf" | awk '{print $2}')"
  if ! up="$(wait_until "$t0" 20 "$pid" tcp_open "${addr%:*}" "${addr##*:}")"; then
    fail_row pstest "$ver" - - "cannot connect to $addr" "$logf"; stop_group "$pid"; return
  fi
  rss="$(rss_mib "$pid")"
  if [[ -n "$py" ]]; then
    if PUBSUB_EMULATOR_HOST="$addr" timeout 60 "$py" - >"$d/client.log" 2>&1 <<'EOF'
from google.cloud import pubsub_v1
pub = pubsub_v1.PublisherClient(); sub = pubsub_v1.SubscriberClient()
topic = pub.topic_path("tributary", "smoke"); s = sub.subscription_path("tributary", "smoke-sub")
pub.create_topic(name=topic)
sub.create_subscription(name=s, topic=topic)
pub.publish(topic, b"hello-pubsub").result(timeout=20)
r = sub.pull(subscription=s, max_messages=1, timeout=20)
assert r.received_messages and r.received_messages[0].message.data == b"hello-pubsub", r
sub.acknowledge(subscription=s, ack_ids=[r.received_messages[0].ack_id])
print("ok", r.received_messages[0].message.message_id)
EOF
    then
      rss="$(rss_mib "$pid")"
      row pstest "$ver" "$up" "$rss" "OK (python client create/publish/pull/ack at $addr)"
    else
      fail_row pstest "$ver" "$up" "$rss" "python client publish/pull failed" "$d/client.log"
    fi
  else
    row pstest "$ver" "$up" "$rss" "OK (TCP connect to $addr only; no python client)"
  fi
  stop_group "$pid"
}

for s in "${servers[@]}"; do
  case "$s" in
    kafka) smoke_kafka ;;
    pulsar) smoke_pulsar ;;
    pstest) smoke_pstest ;;
    *) die "unknown server '$s'" "use any of: kafka pulsar pstest" ;;
  esac
done

printf '\n%-8s %-10s %9s %8s  %s\n' server version startup_s rss_mib result
printf '%s\n' "${ROWS[@]}"
exit "$failed"
