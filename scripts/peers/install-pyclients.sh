#!/usr/bin/env bash
# Official Python clients for the interop tests: Google's Pub/Sub client (tributary <-> a Pub/Sub
# user's client against the same pstest) and Microsoft's azure-eventhub (against
# tributary-eventhubs-emulator).
#
#   scripts/peers/install-pyclients.sh     # idempotent; fast when already installed
#
# Result: $PEERS_DIR/pyvenv/<ver>/bin/python with google-cloud-pubsub and azure-eventhub,
# $PEERS_DIR/pyvenv/current -> <ver>
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=pyclients

PUBSUB_PY_VERSION="${PUBSUB_PY_VERSION:-2.44.0}"
EVENTHUB_PY_VERSION="${EVENTHUB_PY_VERSION:-5.15.1}"
# 2: azure-eventhub added to the same venv.
RECIPE_REV=2
COMP="$PEERS_DIR/pyvenv"
DEST="$COMP/$PUBSUB_PY_VERSION"
STAMP="$(stamp pyclients "$PUBSUB_PY_VERSION+eventhub-$EVENTHUB_PY_VERSION" "$RECIPE_REV")"
IMPORTS='import google.cloud.pubsub_v1, azure.eventhub' 

if is_installed "$DEST" "$STAMP" && "$DEST/bin/python" -c "$IMPORTS" 2>/dev/null; then
  set_current "$COMP" "$PUBSUB_PY_VERSION"
  log "google-cloud-pubsub $PUBSUB_PY_VERSION and azure-eventhub $EVENTHUB_PY_VERSION already installed at $DEST"
  exit 0
fi

need python3 "apt-get install -y python3 python3-venv"
rm -rf "$DEST"
log "creating a virtualenv with google-cloud-pubsub==$PUBSUB_PY_VERSION azure-eventhub==$EVENTHUB_PY_VERSION (log: $COMP/pip.log)"
mkdir -p "$COMP"
if ! { python3 -m venv "$DEST" && "$DEST/bin/python" -m pip install -q --disable-pip-version-check \
        "google-cloud-pubsub==$PUBSUB_PY_VERSION" "azure-eventhub==$EVENTHUB_PY_VERSION"; } >"$COMP/pip.log" 2>&1; then
  tail -5 "$COMP/pip.log" >&2
  die "could not install google-cloud-pubsub $PUBSUB_PY_VERSION / azure-eventhub $EVENTHUB_PY_VERSION (log: $COMP/pip.log)" \
      "check PyPI is reachable: python3 -m pip download google-cloud-pubsub==$PUBSUB_PY_VERSION azure-eventhub==$EVENTHUB_PY_VERSION" \
      "python3-venv is needed: apt-get install -y python3-venv"
fi
"$DEST/bin/python" -c "$IMPORTS" || die "google-cloud-pubsub or azure-eventhub does not import" "see $COMP/pip.log"
mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$PUBSUB_PY_VERSION"
log "google-cloud-pubsub $PUBSUB_PY_VERSION and azure-eventhub $EVENTHUB_PY_VERSION installed at $DEST"
