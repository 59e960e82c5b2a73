#!/usr/bin/env bash
# Install Azurite (npm, MIT), Microsoft's open-source Azure Storage emulator, into the peers cache:
# the Event Hubs backend keeps its consumer groups' partition ownership and checkpoints in Azure
# Blob Storage (the layout Microsoft's Event Hubs SDKs share), and its tests need a real Blob API.
#
#   scripts/peers/install-azurite.sh     # idempotent; fast when already installed
#
# Result: $PEERS_DIR/azurite/<ver>/bin/azurite-blob, $PEERS_DIR/azurite/current -> <ver>
#   azurite-blob --blobHost 127.0.0.1 --blobPort 0 --location DIR --silent --skipApiVersionCheck
#   (prints "Azurite Blob service successfully listens on http://127.0.0.1:P"; port 0 lets the
#   kernel pick a free port, so there is no race between picking one and binding it)
#
# Accounts: the well-known development account `devstoreaccount1` and its published key.
# --skipApiVersionCheck lets SDKs newer than this Azurite release talk to it.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=azurite

AZURITE_VERSION="${AZURITE_VERSION:-3.37.0}"
RECIPE_REV=1
COMP="$PEERS_DIR/azurite"
DEST="$COMP/$AZURITE_VERSION"
STAMP="$(stamp azurite "$AZURITE_VERSION" "$RECIPE_REV")"

if is_installed "$DEST" "$STAMP" && [[ -x "$DEST/bin/azurite-blob" ]]; then
  set_current "$COMP" "$AZURITE_VERSION"
  log "azurite $AZURITE_VERSION already installed at $DEST"
  exit 0
fi

npm_install "$DEST" azurite "$AZURITE_VERSION"
# A stable path for the fixture, independent of npm's .bin layout.
ln -sfn ../node_modules/.bin/azurite-blob "$DEST/bin/azurite-blob"

# A real start: it must bind, print its port and answer an unauthenticated container listing
# with 403 (AuthorizationFailure), which only the running blob handler does.
probe_log="$DEST/probe.log"
probe_dir="$(mktemp -d "${TMPDIR:-/tmp}/azurite-probe.XXXXXX")"
"$DEST/bin/azurite-blob" --blobHost 127.0.0.1 --blobPort 0 --location "$probe_dir" --silent \
  --skipApiVersionCheck >"$probe_log" 2>&1 &
pid=$!
port="$(printed_port "$probe_log" "Azurite Blob service successfully listens on" "$pid" 150)"
status=""
if [[ -n "$port" ]]; then
  status="$(PORT="$port" node -e '
    const req = require("http").request({ host: "127.0.0.1", port: process.env.PORT, timeout: 5000,
      path: "/devstoreaccount1?comp=list" }, (res) => { res.resume(); console.log(res.statusCode) })
    req.on("error", (e) => console.log(e.message)); req.end()' || true)"
fi
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
rm -rf "$probe_dir"
[[ "$status" == 403 ]] || { cat "$probe_log" >&2; die "azurite $AZURITE_VERSION installed but did not answer a listing (answer: ${status:-none})" "see $probe_log and $DEST/npm.log"; }

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$AZURITE_VERSION"
log "azurite $AZURITE_VERSION installed at $DEST ($(du -sh "$DEST" | cut -f1))"
