#!/usr/bin/env bash
# Install every real-server peer used by tributary's integration tests, plus protoc.
#
#   scripts/peers/install-all.sh                 # kafka pulsar pstest ferrokinesis dynalite pyclients azurite (idempotent, fast when done)
#   scripts/peers/install-all.sh kafka pstest    # a subset
#   scripts/peers/install-all.sh --system        # only the system packages the builds need (protoc, OpenSSL headers)
#   scripts/peers/install-all.sh --no-system     # only the servers (scripts/test runs these beside the build)
#   scripts/peers/install-all.sh --list          # the servers installed by default, one a line
#
# Env: TRIBUTARY_PEERS_DIR (default <repo>/.peers), KAFKA_VERSION, PULSAR_VERSION,
#      PEERS_MAVEN_REPO_LOCAL (alternative ~/.m2/repository), PEERS_SKIP_PROTOC=1,
#      PEERS_SKIP_OPENSSL=1.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=install-all

# The system packages come first and alone when a build waits for them: the Rust pulsar crate's
# build script runs protoc and rdkafka's builds librdkafka against OpenSSL, while the servers
# are needed only once the tests run.
default_items=(kafka pulsar pstest ferrokinesis dynalite pyclients azurite)
system=yes
items=()
for arg in "$@"; do
  case "$arg" in
    --list) printf '%s\n' "${default_items[@]}"; exit 0 ;;
    --system) system=only ;;
    --no-system) system=no ;;
    *) items+=("$arg") ;;
  esac
done
[[ $system == only || ${#items[@]} -gt 0 ]] || items=("${default_items[@]}")

declare -a TIMES=()
elapsed() { awk -v a="$1" -v b="$(now_s)" 'BEGIN{printf "%.1f", b-a}'; }

# protoc: the Rust pulsar crate's build script needs it.
if [[ $system != no && -z "${PEERS_SKIP_PROTOC:-}" ]]; then
  t0="$(now_s)"
  if command -v protoc >/dev/null 2>&1; then
    TIMES+=("$(printf '%-8s %8s  %s' protoc "$(elapsed "$t0")" "present: $(protoc --version)")")
  else
    command -v apt-get >/dev/null 2>&1 || die "protoc is missing and apt-get is not available" \
      "install protobuf-compiler with your package manager, or set PROTOC=/path/to/protoc"
    SUDO=(); [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
    log "protoc missing: apt-get install -y protobuf-compiler"
    { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq protobuf-compiler; } \
      >"${TMPDIR:-/tmp}/peers-apt.log" 2>&1 \
      || { tail -5 "${TMPDIR:-/tmp}/peers-apt.log" >&2; die "apt-get install protobuf-compiler failed" \
             "run it by hand: apt-get update && apt-get install -y protobuf-compiler"; }
    TIMES+=("$(printf '%-8s %8s  %s' protoc "$(elapsed "$t0")" "installed: $(protoc --version)")")
  fi
fi

# OpenSSL headers and pkg-config: the Kafka tests build librdkafka with TLS (rdkafka's `ssl`
# feature) to test against a TLS/SASL listener.
if [[ $system != no && -z "${PEERS_SKIP_OPENSSL:-}" ]]; then
  t0="$(now_s)"
  if pkg-config --exists openssl 2>/dev/null; then
    TIMES+=("$(printf '%-8s %8s  %s' openssl "$(elapsed "$t0")" "present: $(pkg-config --modversion openssl)")")
  else
    command -v apt-get >/dev/null 2>&1 || die "OpenSSL headers are missing and apt-get is not available" \
      "install libssl-dev (or openssl-devel) and pkg-config with your package manager"
    SUDO=(); [[ "$(id -u)" == 0 ]] || SUDO=(sudo)
    log "OpenSSL headers missing: apt-get install -y libssl-dev pkg-config"
    { "${SUDO[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -qq libssl-dev pkg-config; } \
      >"${TMPDIR:-/tmp}/peers-apt.log" 2>&1 \
      || { tail -5 "${TMPDIR:-/tmp}/peers-apt.log" >&2; die "apt-get install libssl-dev pkg-config failed" \
             "run it by hand: apt-get update && apt-get install -y libssl-dev pkg-config"; }
    TIMES+=("$(printf '%-8s %8s  %s' openssl "$(elapsed "$t0")" "installed: $(pkg-config --modversion openssl)")")
  fi
fi

rc=0
for it in "${items[@]}"; do
  script="$PEERS_SCRIPTS/install-$it.sh"
  [[ -f "$script" ]] || die "no installer for '$it' ($script)" "use any of: kafka pulsar pstest ferrokinesis dynalite pyclients azurite"
  t0="$(now_s)"
  if bash "$script"; then
    TIMES+=("$(printf '%-8s %8s  %s' "$it" "$(elapsed "$t0")" ok)")
  else
    TIMES+=("$(printf '%-8s %8s  %s' "$it" "$(elapsed "$t0")" "FAILED (see messages above)")")
    rc=1
  fi
done

printf '\n%-8s %8s  %s\n' item seconds result >&2
printf '%s\n' "${TIMES[@]}" >&2
[[ $rc == 0 ]] || die "some installers failed" "re-run the failing one alone: bash scripts/peers/install-<name>.sh"
