"""Microsoft's Python Event Hubs client (azure-eventhub) as tributary's counterpart in tests.

    eventhubs_peer.py send CONN HUB COUNT           batches by partition key, properties with
                                                    binary values, event time as tributary-ts
    eventhubs_peer.py iot CONN HUB                  one event with IoT Hub's system annotations
    eventhubs_peer.py receive CONN HUB COUNT        every partition from the start until COUNT
                                                    events; one JSON line per event
    eventhubs_peer.py process CONN HUB STORAGE CONTAINER GROUP EXPECTED
                                                    the event processor with Microsoft's Blob
                                                    checkpoint store: checkpoint every event,
                                                    stop 3 s after EXPECTED events (60 s at
                                                    most); one JSON line per event

CONN is an Event Hubs connection string with UseDevelopmentEmulator=true (plain AMQP).
"""

import asyncio
import datetime
import json
import sys
import threading
import time

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._pyamqp import _platform

# pyamqp reads every TCP option and writes it back; on loopback the kernel may report a
# TCP_MAXSEG above 32767, which it then refuses. Fixed upstream by Azure/azure-sdk-for-python
# PR 45418; not needed against Azure.
_platform.KNOWN_TCP_OPTS.discard("TCP_MAXSEG")


def value(v):
    # pyamqp hands out AMQP strings and binaries alike as bytes.
    if isinstance(v, bytes):
        return {"hex": v.hex()}
    if isinstance(v, datetime.datetime):
        return {"ms": round(v.timestamp() * 1000)}
    if isinstance(v, (int, float, bool, str)) or v is None:
        return v
    return str(v)


def millis(ms):
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.timezone.utc)


def body_bytes(e):
    body = e.body
    if isinstance(body, (bytes, bytearray)):
        return bytes(body)
    if isinstance(body, str):
        return body.encode()
    return b"".join(body)


def describe(e, partition):
    return {
        "partition": partition,
        "body_hex": body_bytes(e).hex(),
        "sequence_number": e.sequence_number,
        "offset": e.offset,
        "partition_key": e.partition_key.decode() if isinstance(e.partition_key, bytes) else e.partition_key,
        "enqueued_ms": int(e.enqueued_time.timestamp() * 1000) if e.enqueued_time else None,
        "properties": {
            (k.decode() if isinstance(k, bytes) else k): value(v) for k, v in (e.properties or {}).items()
        },
    }


def send(conn, hub, count):
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    with producer:
        by_key = {}
        for i in range(count):
            by_key.setdefault(f"py-key-{i % 7}", []).append(i)
        for key, numbers in by_key.items():
            batch = producer.create_batch(partition_key=key)
            for i in numbers:
                event = EventData(f"py-{i}".encode() + bytes([0, 255]))
                # A datetime travels as an AMQP timestamp (milliseconds); pyamqp cannot encode an
                # int above 2**31 as a property.
                event.properties = {
                    "n": str(i),
                    "raw": bytes([0, 255, i % 256]),
                    "tributary-ts": millis(1_700_000_000_000 + i),
                }
                try:
                    batch.add(event)
                except ValueError:
                    producer.send_batch(batch)
                    batch = producer.create_batch(partition_key=key)
                    batch.add(event)
            producer.send_batch(batch)
    print(json.dumps({"sent": count}))


def iot(conn, hub):
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    with producer:
        event = EventData(b'{"temperature": 21.5}')
        message = event.raw_amqp_message
        message.annotations = {
            b"iothub-connection-device-id": "thermostat-7",
            b"iothub-connection-module-id": "sensor",
            b"iothub-connection-auth-method": '{"scope":"device","type":"sas","issuer":"iothub"}',
            b"iothub-connection-auth-generation-id": "637000000000000000",
            b"iothub-enqueuedtime": millis(1_700_000_123_456),
            b"iothub-message-source": "Telemetry",
        }
        event.content_type = "application/json"
        message.properties.content_encoding = "utf-8"
        event.properties = {"alert": "false"}
        batch = producer.create_batch(partition_key="thermostat-7")
        batch.add(event)
        producer.send_batch(batch)
    print(json.dumps({"sent": 1}))


def receive(conn, hub, count):
    received = []
    done = threading.Event()
    lock = threading.Lock()

    def on_event_batch(context, events):
        with lock:
            for e in events:
                received.append(describe(e, context.partition_id))
            if len(received) >= count:
                done.set()

    consumer = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name=hub
    )
    worker = threading.Thread(
        target=consumer.receive_batch,
        kwargs={
            "on_event_batch": on_event_batch,
            "starting_position": "-1",
            "max_wait_time": 1,
            "max_batch_size": 100,
            "prefetch": 50,
        },
        daemon=True,
    )
    worker.start()
    done.wait(timeout=120)
    consumer.close()
    worker.join(timeout=10)
    for r in received:
        print(json.dumps(r))


async def process(conn, hub, storage, container, group, expected):
    from azure.eventhub.aio import EventHubConsumerClient as AsyncConsumer
    from azure.eventhub.extensions.checkpointstoreblobaio import BlobCheckpointStore

    store = BlobCheckpointStore.from_connection_string(storage, container)
    consumer = AsyncConsumer.from_connection_string(
        conn,
        consumer_group=group,
        eventhub_name=hub,
        checkpoint_store=store,
        load_balancing_interval=1,
    )
    last = [time.monotonic()]
    out = []

    async def on_event(context, event):
        if event is None:
            return
        out.append(describe(event, context.partition_id))
        last[0] = time.monotonic()
        await context.update_checkpoint(event)

    task = asyncio.ensure_future(consumer.receive(on_event=on_event, starting_position="-1", prefetch=50))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (len(out) >= expected and time.monotonic() - last[0] > 3):
        await asyncio.sleep(0.2)
    await consumer.close()
    await task
    await store.close()
    for r in out:
        print(json.dumps(r))


def main():
    mode = sys.argv[1]
    if mode == "send":
        send(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "iot":
        iot(sys.argv[2], sys.argv[3])
    elif mode == "receive":
        receive(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    elif mode == "process":
        asyncio.run(process(*sys.argv[2:7], int(sys.argv[7])))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
