#!/usr/bin/env bash
# Official Python clients for the interop tests: Google's Pub/Sub client (tributary <-> a Pub/Sub
# user's client against the same pstest), Microsoft's azure-eventhub (against
# tributary-eventhubs-emulator) with its Blob checkpoint store (against Azurite), Apache's
# pulsar-client (against the Pulsar standalone), and AWS's boto3 and aws-kinesis-agg (the KPL's
# aggregated record format in Python) against ferrokinesis and dynalite.
#
#   scripts/peers/install-pyclients.sh     # idempotent; fast when already installed
#
# Result: $PEERS_DIR/pyvenv/<ver>/bin/python with every client above,
# $PEERS_DIR/pyvenv/current -> <ver>
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=pyclients

PUBSUB_PY_VERSION="${PUBSUB_PY_VERSION:-2.44.0}"
EVENTHUB_PY_VERSION="${EVENTHUB_PY_VERSION:-5.15.1}"
PULSAR_PY_VERSION="${PULSAR_PY_VERSION:-3.13.0}"
EVENTHUB_BLOB_PY_VERSION="${EVENTHUB_BLOB_PY_VERSION:-1.2.0}"
BOTO3_VERSION="${BOTO3_VERSION:-1.44.8}"
KINESIS_AGG_PY_VERSION="${KINESIS_AGG_PY_VERSION:-1.2.3}"
# 2: azure-eventhub added to the same venv. 3: pulsar-client. 4: the Event Hubs Blob checkpoint
# store, boto3 and aws-kinesis-agg.
RECIPE_REV=4
COMP="$PEERS_DIR/pyvenv"
DEST="$COMP/$PUBSUB_PY_VERSION"
STAMP="$(stamp pyclients "$PUBSUB_PY_VERSION+eventhub-$EVENTHUB_PY_VERSION+blob-$EVENTHUB_BLOB_PY_VERSION+pulsar-$PULSAR_PY_VERSION+boto3-$BOTO3_VERSION+kinesis-agg-$KINESIS_AGG_PY_VERSION" "$RECIPE_REV")"
IMPORTS='import google.cloud.pubsub_v1, azure.eventhub, azure.eventhub.extensions.checkpointstoreblobaio, pulsar, boto3, aws_kinesis_agg.aggregator'
PACKAGES=(
  "google-cloud-pubsub==$PUBSUB_PY_VERSION"
  "azure-eventhub==$EVENTHUB_PY_VERSION"
  "azure-eventhub-checkpointstoreblob-aio==$EVENTHUB_BLOB_PY_VERSION"
  "pulsar-client==$PULSAR_PY_VERSION"
  "boto3==$BOTO3_VERSION"
  "aws-kinesis-agg==$KINESIS_AGG_PY_VERSION"
)

if is_installed "$DEST" "$STAMP" && "$DEST/bin/python" -c "$IMPORTS" 2>/dev/null; then
  set_current "$COMP" "$PUBSUB_PY_VERSION"
  log "${PACKAGES[*]} already installed at $DEST"
  exit 0
fi

need python3 "apt-get install -y python3 python3-venv"
rm -rf "$DEST"
log "creating a virtualenv with ${PACKAGES[*]} (log: $COMP/pip.log)"
mkdir -p "$COMP"
if ! { python3 -m venv "$DEST" && "$DEST/bin/python" -m pip install -q --disable-pip-version-check \
        "${PACKAGES[@]}"; } >"$COMP/pip.log" 2>&1; then
  tail -5 "$COMP/pip.log" >&2
  die "could not install ${PACKAGES[*]} (log: $COMP/pip.log)" \
      "check PyPI is reachable: python3 -m pip download ${PACKAGES[*]}" \
      "python3-venv is needed: apt-get install -y python3-venv"
fi
"$DEST/bin/python" -c "$IMPORTS" || die "one of ${PACKAGES[*]} does not import" "see $COMP/pip.log"
mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$PUBSUB_PY_VERSION"
log "${PACKAGES[*]} installed at $DEST"
