"""Microsoft's Python Event Hubs client: keyed events with application properties against
unkeyed ones, both read back through the emulator, content checked, rates measured.

Usage: keyed_rate.py CONNECTION_STRING KEYED_HUB UNKEYED_HUB EVENTS KEYS

Sends EVENTS events to KEYED_HUB in batches by partition key (KEYS keys) with a string, an int
and a binary application property each, and EVENTS events without key or properties to
UNKEYED_HUB in batches by partition id. Then reads each hub from the start on all partitions
with `EventHubConsumerClient.receive_batch` until every event arrived, checks every keyed
event's body, key and properties, and prints one JSON object: per hub the events read, the
seconds from the consumer's start to the last event, the rate, and the events per partition.

Why `receive_batch`: the client's synchronous `receive(on_event=...)` visits the partitions in
turn from one thread and hands over one event per partition per turn; a partition with nothing
left costs a socket wait (0.2 s) per turn. Events sent in batches by key fill the partitions
unevenly (a batch lands whole on its key's partition), so once the smallest is drained the
others come at about 5 per second each, against the real service as against the emulator
(Azure/azure-sdk-for-python#26051). `receive_batch` hands over up to `max_batch_size` per turn.
"""

import json
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._pyamqp import _platform

# pyamqp reads every known TCP option with getsockopt and writes it back. On loopback the
# kernel may report a TCP_MAXSEG above 32767, which setsockopt refuses ("[Errno 22] Invalid
# argument"), so some connections fail at random. Fixed upstream by
# https://github.com/Azure/azure-sdk-for-python/pull/45418; not needed against Azure.
_platform.KNOWN_TCP_OPTS.discard("TCP_MAXSEG")

BLOB = bytes(range(256))


def blob_for(i):
    start = i % 200
    return BLOB[start : start + 16]


def send_keyed(conn, hub, events, keys):
    per_key = -(-events // keys)
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    with producer:
        i = 0
        for k in range(keys):
            batch = producer.create_batch(partition_key=f"customer-{k}")
            for _ in range(per_key):
                if i == events:
                    break
                event = EventData(f"keyed-{i}")
                event.properties = {"text": f"t{i}", "n": i, "blob": blob_for(i)}
                try:
                    batch.add(event)
                except ValueError:
                    producer.send_batch(batch)
                    batch = producer.create_batch(partition_key=f"customer-{k}")
                    batch.add(event)
                i += 1
            if len(batch):
                producer.send_batch(batch)


def send_unkeyed(conn, hub, events):
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    with producer:
        ids = producer.get_partition_ids()
        i = 0
        while i < events:
            batch = producer.create_batch(partition_id=ids[(i // 100) % len(ids)])
            for _ in range(min(100, events - i)):
                batch.add(EventData(f"plain-{i}"))
                i += 1
            producer.send_batch(batch)


def read_all(conn, hub, events, check):
    received = []
    per_partition = {}
    lock = threading.Lock()
    done = threading.Event()

    def on_batch(context, batch):
        with lock:
            received.extend(batch)
            per_partition[context.partition_id] = per_partition.get(context.partition_id, 0) + len(batch)
            if len(received) >= events:
                done.set()

    consumer = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name=hub
    )
    started = time.monotonic()
    worker = threading.Thread(
        target=consumer.receive_batch,
        kwargs={"on_event_batch": on_batch, "starting_position": "-1", "max_batch_size": 300},
        daemon=True,
    )
    worker.start()
    done.wait(timeout=240)
    seconds = time.monotonic() - started
    consumer.close()
    worker.join(timeout=10)
    # Checked after the clock stopped: the rate is the client's and the emulator's, not this
    # script's.
    problems = [p for p in map(check, received) if p][:5]
    bodies = [event.body_as_str() for event in received]
    return {
        "events": len(bodies),
        "distinct": len(set(bodies)),
        "seconds": round(seconds, 3),
        "rate": round(len(bodies) / seconds, 1),
        "per_partition": dict(sorted(per_partition.items())),
        "problems": problems,
    }


def check_keyed(event):
    body = event.body_as_str()
    i = int(body.split("-")[1])
    props = {(k.decode() if isinstance(k, bytes) else k): v for k, v in (event.properties or {}).items()}
    text = props.get("text")
    text = text.decode() if isinstance(text, bytes) else text
    if text != f"t{i}" or props.get("n") != i or props.get("blob") != blob_for(i):
        return f"{body}: properties {props!r}"
    key = event.partition_key
    key = key.decode() if isinstance(key, bytes) else key
    if not (key or "").startswith("customer-"):
        return f"{body}: partition key {key!r}"
    return None


def main():
    conn, keyed_hub, unkeyed_hub, events, keys = (
        sys.argv[1],
        sys.argv[2],
        sys.argv[3],
        int(sys.argv[4]),
        int(sys.argv[5]),
    )
    send_keyed(conn, keyed_hub, events, keys)
    send_unkeyed(conn, unkeyed_hub, events)
    report = {
        "unkeyed": read_all(conn, unkeyed_hub, events, lambda event: None),
        "keyed": read_all(conn, keyed_hub, events, check_keyed),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
