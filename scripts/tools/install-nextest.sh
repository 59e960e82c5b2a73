#!/usr/bin/env bash
# Build cargo-nextest (crates.io, the test runner scripts/test uses) into the tools cache.
#
#   scripts/tools/install-nextest.sh     # idempotent; prints the binary's path on stdout
#
# Result: $TOOLS_DIR/nextest/<ver>/bin/cargo-nextest, $TOOLS_DIR/nextest/current -> <ver>,
# where TOOLS_DIR is TRIBUTARY_TOOLS_DIR, else ~/.cache/tributary/tools (shared by every clone
# on the machine, like the servers' cache). The version is pinned: .config/nextest.toml uses
# setup scripts, an experimental nextest feature whose syntax is only promised per version.
# Built from source with --locked (about 6 minutes on 2 cores, once per machine).
# shellcheck source=SCRIPTDIR/../peers/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/../peers/lib.sh"
PEERS_TAG=nextest

NEXTEST_VERSION="${NEXTEST_VERSION:-0.9.151}"
RECIPE_REV=1
TOOLS_DIR="${TRIBUTARY_TOOLS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/tributary/tools}"
COMP="$TOOLS_DIR/nextest"
DEST="$COMP/$NEXTEST_VERSION"
STAMP="$(stamp cargo-nextest "$NEXTEST_VERSION" "$RECIPE_REV")"

if is_installed "$DEST" "$STAMP" && [[ -x "$DEST/bin/cargo-nextest" ]]; then
  set_current "$COMP" "$NEXTEST_VERSION"
  printf '%s\n' "$DEST/bin/cargo-nextest"
  exit 0
fi

need cargo "install Rust from https://rustup.rs"
mkdir -p "$DEST"
rm -f "$DEST/.installed"
log "building cargo-nextest $NEXTEST_VERSION with cargo install (once per machine, about 6 minutes on 2 cores; log: $DEST/build.log)"
t0="$(date +%s)"
if ! CARGO_TARGET_DIR="$COMP/.build" nice -n 10 cargo install cargo-nextest --version "=$NEXTEST_VERSION" \
      --locked --no-default-features --features default-no-update --root "$DEST" >"$DEST/build.log" 2>&1; then
  tail -20 "$DEST/build.log" >&2
  die "cargo install cargo-nextest $NEXTEST_VERSION failed (log: $DEST/build.log)" \
      "check crates.io is reachable: cargo search cargo-nextest"
fi
rm -rf "$COMP/.build"
"$DEST/bin/cargo-nextest" nextest --version >/dev/null \
  || die "built $DEST/bin/cargo-nextest does not run" "see $DEST/build.log"
mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$NEXTEST_VERSION"
log "cargo-nextest $NEXTEST_VERSION installed at $DEST in $(( $(date +%s) - t0 )) s"
printf '%s\n' "$DEST/bin/cargo-nextest"
