# shellcheck shell=bash
# Shared helpers for scripts/peers/*.sh — source it, do not execute it.
#
# Layout (all under $PEERS_DIR, default ~/.cache/tributary/peers, override with TRIBUTARY_PEERS_DIR):
#   kafka/<ver>/{lib,bin,config}   kafka/current -> <ver>
#   pulsar/<ver>/{lib,bin,config}  pulsar/current -> <ver>
#   pstest/<ver>/pstest            pstest/current -> <ver>
#   ferrokinesis/<ver>/bin/ferrokinesis  ferrokinesis/current -> <ver>
#   dynalite/<ver>/bin/dynalite    dynalite/current -> <ver>
# Each install directory gets a `.installed` marker holding a stamp (name, version, recipe
# revision). An installer whose marker matches exits at once; a version or recipe bump
# reinstalls into a fresh directory.

set -euo pipefail

PEERS_SCRIPTS="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$PEERS_SCRIPTS/../.." && pwd)"
# shellcheck disable=SC2034  # used by the scripts that source this file
# Outside the checkout, so every clone (and CI's clean clone) on a machine shares one cache.
PEERS_DIR="${TRIBUTARY_PEERS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary/peers}"

log()  { printf '[%s %s] %s\n' "${PEERS_TAG:-peers}" "$(date +%H:%M:%S)" "$*" >&2; }
warn() { printf '[%s %s] WARNING: %s\n' "${PEERS_TAG:-peers}" "$(date +%H:%M:%S)" "$*" >&2; }
die()  {
  printf '[%s %s] ERROR: %s\n' "${PEERS_TAG:-peers}" "$(date +%H:%M:%S)" "$1" >&2
  shift || true
  local l
  for l in "$@"; do printf '    fix: %s\n' "$l" >&2; done
  exit 1
}

# need CMD "how to fix"
need() {
  command -v "$1" >/dev/null 2>&1 || die "required command '$1' not found on PATH" "${2:-install $1}"
}

# java_major [JAVA] -> prints the major version (17, 21, 25...)
java_major() {
  local j="${1:-java}" v
  v="$("$j" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')"
  case "$v" in 1.*) v="${v#1.}" ;; esac
  printf '%s\n' "${v%%.*}"
}

need_java() { # need_java MIN
  need java "apt-get install -y openjdk-17-jdk-headless"
  local m; m="$(java_major java)"
  [[ "$m" =~ ^[0-9]+$ ]] || die "cannot parse 'java -version' output" "check that java runs: java -version"
  (( m >= $1 )) || die "java $m found, $1+ needed" "apt-get install -y openjdk-17-jdk-headless, or put a newer JDK first on PATH"
}

# stamp NAME VERSION RECIPE_REV -> the marker contents
stamp() { printf '%s %s recipe=%s\n' "$1" "$2" "$3"; }

# is_installed DIR STAMP -> 0 if DIR/.installed matches STAMP exactly
is_installed() {
  [[ -f "$1/.installed" ]] && [[ "$(cat "$1/.installed")" == "$2" ]]
}

mark_installed() { printf '%s\n' "$2" > "$1/.installed"; }

# set_current COMPONENT_DIR VERSION: point COMPONENT_DIR/current at VERSION (relative link)
set_current() {
  ln -sfn "$2" "$1/current.tmp.$$"
  mv -Tf "$1/current.tmp.$$" "$1/current"
}

# npm_install DEST PACKAGE VERSION: a fresh DEST with PACKAGE@VERSION in DEST/node_modules and an
# empty DEST/bin (npm's log: DEST/npm.log). Needs Node 18 or newer. npm runs no install scripts
# of the package's here; the packages installed this way need none.
npm_install() {
  local dest="$1" package="$2" version="$3" node_major
  need node "apt-get install -y nodejs (Node 18 or newer)"
  need npm "apt-get install -y npm"
  node_major="$(node -p 'process.versions.node.split(".")[0]')"
  (( node_major >= 18 )) || die "node $node_major found, 18+ needed by $package $version" \
    "install a newer Node (https://nodejs.org) and put it first on PATH"
  rm -rf "$dest"
  mkdir -p "$dest/bin"
  log "npm install $package@$version (about a minute; log: $dest/npm.log)"
  if ! (cd "$dest" && printf '{"name":"tributary-%s","private":true}\n' "$package" > package.json \
        && npm install --no-audit --no-fund --omit=dev "$package@$version" >"$dest/npm.log" 2>&1); then
    tail -10 "$dest/npm.log" >&2
    die "npm install $package@$version failed (log: $dest/npm.log)" \
        "check the npm registry is reachable: npm view $package@$version version"
  fi
}

# printed_port LOG PREFIX PID TRIES: waits (0.1 s a try, at most TRIES) for the line
# "PREFIX http://HOST:PORT" a server started as PID writes to LOG; prints PORT, or nothing
# when the server exits or the tries run out.
printed_port() {
  local port="" _
  for _ in $(seq 1 "$4"); do
    port="$(sed -n "s/^$2 http:\/\/[^:]*:\([0-9]*\)\$/\1/p" "$1")"
    [[ -n "$port" ]] && break
    kill -0 "$3" 2>/dev/null || break
    sleep 0.1
  done
  printf '%s' "$port"
}

# maven_copy_deps DIR: DIR has pom.xml; copy runtime deps into DIR/lib (fresh).
# PEERS_MAVEN_REPO_LOCAL overrides the local repository (~/.m2/repository by default).
# Only Maven Central is used: the peers' POMs declare extra repositories (confluent,
# restlet...) that are unreachable here and each costs a long timeout.
maven_copy_deps() {
  local dir="$1" settings="$1/.mvn-settings.xml" logf="$1/mvn.log"
  need mvn "apt-get install -y maven"
  cat > "$settings" <<'EOF'
<settings>
  <mirrors>
    <mirror><id>central-only</id><mirrorOf>*</mirrorOf><url>https://repo.maven.apache.org/maven2</url></mirror>
  </mirrors>
</settings>
EOF
  rm -rf "${dir:?}/lib"
  log "resolving Maven dependencies into $dir/lib (log: $logf)"
  local repo_opt=()
  [[ -n "${PEERS_MAVEN_REPO_LOCAL:-}" ]] && repo_opt=("-Dmaven.repo.local=$PEERS_MAVEN_REPO_LOCAL")
  if ! (cd "$dir" && nice -n 10 mvn -B -q -Dstyle.color=never -s "$settings" "${repo_opt[@]}" dependency:copy-dependencies \
          -DoutputDirectory=lib -DincludeScope=runtime >"$logf" 2>&1); then
    grep -E 'ERROR' "$logf" | head -5 >&2 || true
    die "maven could not resolve the dependencies in $dir/pom.xml (full log: $logf)" \
        "check Maven Central is reachable: mvn -B dependency:get -Dartifact=org.slf4j:slf4j-api:2.0.13" \
        "if an artifact is 'not found', that version is not served here: pick another version (see the installer's header)"
  fi
  [[ -n "$(ls -A "$dir/lib" 2>/dev/null)" ]] || die "maven produced an empty $dir/lib" "see $logf"
}

# maven_dist DEST NAME VERSION DEPENDENCIES CLASSES FIX: a Java server's distribution from
# Maven Central: DEST/{bin,config}, and DEST/lib holding the runtime tree of DEPENDENCIES (the
# <dependency> elements of a POM), which must contain every class in CLASSES (dotted names,
# space separated; FIX says what to do when one is missing), and one slf4j-api jar.
maven_dist() {
  local dest="$1" name="$2" version="$3" dependencies="$4" classes="$5" fix="$6" cls n_slf4j
  need_java 17
  need unzip "apt-get install -y unzip"
  mkdir -p "$dest/bin" "$dest/config"
  rm -f "$dest/.installed"
  cat > "$dest/pom.xml" <<EOF
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>tributary.peers</groupId><artifactId>$name-dist</artifactId><version>$version</version>
  <packaging>pom</packaging>
  <dependencies>
$dependencies
  </dependencies>
</project>
EOF
  maven_copy_deps "$dest"
  for cls in $classes; do
    jar_has_class "$dest/lib" "$cls" || die "class $cls not found in $dest/lib" "$fix"
  done
  n_slf4j="$(count_jars "$dest/lib" slf4j-api-)"
  [[ "$n_slf4j" == 1 ]] || warn "expected one slf4j-api jar in lib, found $n_slf4j"
}

# write_log4j2 FILE LEVEL: console-only log4j2 config
write_log4j2() {
  cat > "$1" <<EOF
status = warn
appender.c.type = Console
appender.c.name = STDOUT
appender.c.target = SYSTEM_OUT
appender.c.layout.type = PatternLayout
appender.c.layout.pattern = [%d{HH:mm:ss.SSS}] %p %m (%c{1})%n
rootLogger.level = \${sys:peers.log.level:-${2:-WARN}}
rootLogger.appenderRef.c.ref = STDOUT
EOF
}

# jar_has_class LIBDIR CLASS (dotted name) -> 0 if some jar in LIBDIR contains it.
# (Reads the listings into a variable first: `unzip | grep -q` dies of SIGPIPE under pipefail.)
jar_has_class() {
  local path="${2//.//}.class" j listing
  for j in "$1"/*.jar; do
    listing="$(unzip -Z1 "$j" 2>/dev/null || true)"
    [[ $'\n'"$listing"$'\n' == *$'\n'"$path"$'\n'* ]] && return 0
  done
  return 1
}

# count_jars DIR [PREFIX]: number of DIR/PREFIX*.jar files
count_jars() {
  local f n=0
  for f in "$1/${2:-}"*.jar; do [[ -e "$f" ]] && n=$((n + 1)); done
  echo "$n"
}

# free_port: an unused TCP port on 127.0.0.1 (racy but good enough for local tests)
free_port() {
  python3 - <<'EOF'
import socket
s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()
EOF
}

# now_s: seconds since epoch with millis
now_s() { date +%s.%N | cut -c1-14; }

# rss_mib PID: VmRSS of PID plus all its descendants, in MiB
rss_mib() {
  local pids=("$1") all=() p kids total=0 kb
  while ((${#pids[@]})); do
    p="${pids[0]}"; pids=("${pids[@]:1}")
    all+=("$p")
    kids="$(cat /proc/"$p"/task/*/children 2>/dev/null || true)"
    for k in $kids; do pids+=("$k"); done
  done
  for p in "${all[@]}"; do
    kb="$(awk '/^VmRSS:/ {print $2}' /proc/"$p"/status 2>/dev/null || true)"
    total=$(( total + ${kb:-0} ))
  done
  echo $(( total / 1024 ))
}
