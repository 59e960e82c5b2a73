#!/usr/bin/env bash
# Build the Pub/Sub fake (scripts/peers/pstest, wrapping cloud.google.com/go/pubsub/v2/pstest).
#
#   scripts/peers/install-pstest.sh     # idempotent; rebuilds when main.go/go.mod/go.sum change
#
# Result: $PEERS_DIR/pstest/<ver>/pstest, $PEERS_DIR/pstest/current -> <ver>
#   pstest --addr 127.0.0.1:0   -> first stdout line "listening 127.0.0.1:NNNN"; SIGTERM stops it.
#   That one address serves gRPC (HTTP/2) and the Pub/Sub v1 REST API (HTTP/1.1 + JSON).
# Needs Go >= 1.26 (pubsub/v2 v2.9.0 declares `go 1.26.0`).
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=pstest

SRC="$PEERS_SCRIPTS/pstest"
# Either "require cloud.google.com/go/pubsub/v2 vX.Y.Z" or that module's line in a require ( ) block.
PSTEST_VERSION="$(awk '$1=="require" && $2=="cloud.google.com/go/pubsub/v2" {print $3; exit}
  $1=="cloud.google.com/go/pubsub/v2" {print $2; exit}' "$SRC/go.mod")"
[[ -n "$PSTEST_VERSION" ]] || die "cannot read the pubsub/v2 version from $SRC/go.mod" \
  "go.mod must require cloud.google.com/go/pubsub/v2 vX.Y.Z"
SRC_HASH="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-16)"
RECIPE_REV=1

COMP="$PEERS_DIR/pstest"
DEST="$COMP/$PSTEST_VERSION"
STAMP="$(stamp pstest "$PSTEST_VERSION" "$RECIPE_REV src=$SRC_HASH")"

if is_installed "$DEST" "$STAMP" && [[ -x "$DEST/pstest" ]]; then
  set_current "$COMP" "$PSTEST_VERSION"
  log "pstest $PSTEST_VERSION already installed at $DEST"
  exit 0
fi

need go "install Go >= 1.26 (https://go.dev/dl) or apt-get install -y golang-go if Debian's is new enough"
gov="$(go env GOVERSION)"; gov="${gov#go}"
gmaj="${gov%%.*}"; gmin="${gov#*.}"; gmin="${gmin%%.*}"
if (( gmaj < 1 || (gmaj == 1 && gmin < 26) )); then
  # GOTOOLCHAIN=auto would fetch a newer toolchain from the module proxy; say so rather than hide it.
  warn "go $gov found; pubsub/v2 $PSTEST_VERSION needs go >= 1.26 (GOTOOLCHAIN may download one)"
fi

mkdir -p "$DEST"
rm -f "$DEST/.installed"
log "building pstest ($PSTEST_VERSION) with go $gov"
if ! (cd "$SRC" && nice -n 10 go build -mod=readonly -trimpath -ldflags='-s -w' -o "$DEST/pstest.tmp" . ) 2>"$DEST/build.log"; then
  cat "$DEST/build.log" >&2
  die "go build of $SRC failed (log: $DEST/build.log)" \
    "check the Go module proxy is reachable: go env GOPROXY; (cd $SRC && go mod download)" \
    "if go.sum is stale: (cd $SRC && go mod tidy)"
fi
mv -f "$DEST/pstest.tmp" "$DEST/pstest"
"$DEST/pstest" --version >/dev/null || die "built $DEST/pstest does not run" "see $DEST/build.log"

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$PSTEST_VERSION"
log "pstest $PSTEST_VERSION installed at $DEST ($(du -h "$DEST/pstest" | cut -f1))"
