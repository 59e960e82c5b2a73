#!/usr/bin/env bash
# Build the Kinesis emulator ferrokinesis (crates.io, MIT) into the peers cache.
#
#   scripts/peers/install-ferrokinesis.sh     # idempotent; fast when already installed
#
# Result: $PEERS_DIR/ferrokinesis/<ver>/bin/ferrokinesis, $PEERS_DIR/ferrokinesis/current -> <ver>
#   ferrokinesis --port P --create-stream-ms 0   (awsJson1_1 + CBOR, SubscribeToShard over h1/h2c)
#
# Why ferrokinesis over kinesis-mock or kinesalite: it validates requests the way Kinesis does,
# serves SubscribeToShard with the initial-response frame the Rust SDK waits for (kinesalite
# has no enhanced fan-out; kinesis-mock sends no initial-response), starts in milliseconds and
# needs no Node runtime. It is built with the default features into its own target directory
# so the workspace's build is not touched.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=ferrokinesis

FERROKINESIS_VERSION="${FERROKINESIS_VERSION:-0.7.0}"
RECIPE_REV=1
COMP="$PEERS_DIR/ferrokinesis"
DEST="$COMP/$FERROKINESIS_VERSION"
STAMP="$(stamp ferrokinesis "$FERROKINESIS_VERSION" "$RECIPE_REV")"

if is_installed "$DEST" "$STAMP" && [[ -x "$DEST/bin/ferrokinesis" ]]; then
  set_current "$COMP" "$FERROKINESIS_VERSION"
  log "ferrokinesis $FERROKINESIS_VERSION already installed at $DEST"
  exit 0
fi

need cargo "install Rust from https://rustup.rs"
mkdir -p "$DEST"
rm -f "$DEST/.installed"
log "building ferrokinesis $FERROKINESIS_VERSION with cargo install (a few minutes on 2 cores; log: $DEST/build.log)"
if ! CARGO_TARGET_DIR="$COMP/.build" nice -n 10 cargo install ferrokinesis --version "=$FERROKINESIS_VERSION" \
      --locked --root "$DEST" >"$DEST/build.log" 2>&1; then
  tail -20 "$DEST/build.log" >&2
  die "cargo install ferrokinesis $FERROKINESIS_VERSION failed (log: $DEST/build.log)" \
      "check crates.io is reachable: cargo search ferrokinesis" \
      "a C compiler is needed for aws-lc-sys: apt-get install -y build-essential"
fi
rm -rf "$COMP/.build"
"$DEST/bin/ferrokinesis" --version >/dev/null 2>&1 || "$DEST/bin/ferrokinesis" --help >/dev/null \
  || die "built $DEST/bin/ferrokinesis does not run" "see $DEST/build.log"

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$FERROKINESIS_VERSION"
log "ferrokinesis $FERROKINESIS_VERSION installed at $DEST ($(du -h "$DEST/bin/ferrokinesis" | cut -f1))"
