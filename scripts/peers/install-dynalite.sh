#!/usr/bin/env bash
# Install dynalite (npm, MIT), a DynamoDB-compatible server on LevelDB, into the peers cache: the
# Kinesis backend keeps its consumer group's leases and checkpoints in DynamoDB (the KCL's lease
# table), and its tests need a real DynamoDB API to run against.
#
#   scripts/peers/install-dynalite.sh     # idempotent; fast when already installed
#
# Result: $PEERS_DIR/dynalite/<ver>/bin/dynalite, $PEERS_DIR/dynalite/current -> <ver>
#   dynalite --host 127.0.0.1 --port 0    (prints "Dynalite listening at: http://127.0.0.1:P")
#
# bin/dynalite is a small launcher of our own around the package: dynalite's CLI turns
# `--port 0` into its default port 4567, and tests must never use fixed ports, so the launcher
# lets the kernel pick a free one and prints it (no race between picking a port and binding it).
# Tables are in memory unless --path DIR is given. Why dynalite: it checks requests and
# conditions the way DynamoDB does (ConditionalCheckFailedException and all), starts in a
# second, and is open source (the vendor's DynamoDB Local is not).
# classic-level (LevelDB) ships prebuilt binaries, so it needs no install scripts.
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
PEERS_TAG=dynalite

DYNALITE_VERSION="${DYNALITE_VERSION:-4.0.0}"
RECIPE_REV=1
COMP="$PEERS_DIR/dynalite"
DEST="$COMP/$DYNALITE_VERSION"
STAMP="$(stamp dynalite "$DYNALITE_VERSION" "$RECIPE_REV")"

if is_installed "$DEST" "$STAMP" && [[ -x "$DEST/bin/dynalite" ]]; then
  set_current "$COMP" "$DYNALITE_VERSION"
  log "dynalite $DYNALITE_VERSION already installed at $DEST"
  exit 0
fi

npm_install "$DEST" dynalite "$DYNALITE_VERSION"

cat > "$DEST/bin/dynalite" <<'LAUNCHER'
#!/usr/bin/env node
// tributary's launcher for dynalite: like dynalite's own CLI, but `--port 0` means "any free
// port" and the line printed names the port actually bound.
'use strict'
const path = require('path')
const argv = require(path.join(__dirname, '..', 'node_modules', 'minimist'))(process.argv.slice(2))
const dynalite = require(path.join(__dirname, '..', 'node_modules', 'dynalite'))
const host = argv.host || '127.0.0.1'
const port = argv.port === undefined ? 0 : Number(argv.port)
const options = { createTableMs: 0, deleteTableMs: 0, updateTableMs: 0 }
for (const name of ['path', 'createTableMs', 'deleteTableMs', 'updateTableMs', 'maxItemSizeKb', 'verbose', 'debug']) {
  if (argv[name] !== undefined) options[name] = argv[name]
}
const server = dynalite(options)
server.on('error', (e) => { console.error(`dynalite: ${e.message}`); process.exit(1) })
server.listen(port, host, () => {
  console.log('Dynalite listening at: http://%s:%s', host, server.address().port)
})
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => server.close(() => process.exit(0)))
LAUNCHER
chmod +x "$DEST/bin/dynalite"

# A real start: the launcher must bind, print its port and answer ListTables.
probe_log="$DEST/probe.log"
"$DEST/bin/dynalite" --port 0 >"$probe_log" 2>&1 &
pid=$!
port="$(printed_port "$probe_log" "Dynalite listening at:" "$pid" 100)"
answer=""
if [[ -n "$port" ]]; then
  # The probe speaks the DynamoDB JSON protocol from node, so no other tool is needed.
  answer="$(PORT="$port" node -e '
    const req = require("http").request({ host: "127.0.0.1", port: process.env.PORT, method: "POST", timeout: 5000,
      headers: { "Content-Type": "application/x-amz-json-1.0", "X-Amz-Target": "DynamoDB_20120810.ListTables",
        "X-Amz-Date": "20200101T000000Z",
        "Authorization": "AWS4-HMAC-SHA256 Credential=x/20200101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x" } },
      (res) => { let body = ""; res.on("data", (c) => body += c); res.on("end", () => console.log(body)) })
    req.on("error", (e) => console.log(e.message)); req.end("{}")' || true)"
fi
kill "$pid" 2>/dev/null || true
wait "$pid" 2>/dev/null || true
[[ "$answer" == *TableNames* ]] || { cat "$probe_log" >&2; die "dynalite $DYNALITE_VERSION installed but did not answer ListTables (answer: ${answer:-none})" "see $probe_log and $DEST/npm.log"; }

mark_installed "$DEST" "$STAMP"
set_current "$COMP" "$DYNALITE_VERSION"
log "dynalite $DYNALITE_VERSION installed at $DEST ($(du -sh "$DEST" | cut -f1))"
