"""Microsoft's Python Event Hubs client against the emulator.

Usage: interop.py CONNECTION_STRING HUB EXPECTED_ON_PARTITION_0

Sends a batch to partition 0 and a batch with partition key "7", reads hub properties, then
reads partition 0 from the start until EXPECTED_ON_PARTITION_0 events arrived (events sent by
the Rust test before plus the three sent here). Prints one JSON object on stdout.
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


def main():
    conn, hub, expected = sys.argv[1], sys.argv[2], int(sys.argv[3])
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    with producer:
        properties = producer.get_eventhub_properties()
        batch = producer.create_batch(partition_id="0")
        for i in range(3):
            event = EventData(f"from-python-{i}")
            event.properties = {"lang": "python"}
            batch.add(event)
        producer.send_batch(batch)
        keyed = producer.create_batch(partition_key="7")
        for i in range(2):
            keyed.add(EventData(f"keyed-python-{i}"))
        producer.send_batch(keyed)
        partition = producer.get_partition_properties("0")

    received = []
    done = threading.Event()

    def on_event_batch(_context, events):
        for e in events:
            received.append(
                {
                    "body": e.body_as_str(),
                    "sequence_number": e.sequence_number,
                    "offset": e.offset,
                    "partition_key": e.partition_key,
                    "properties": {
                        (k.decode() if isinstance(k, bytes) else k): (
                            v.decode() if isinstance(v, bytes) else v
                        )
                        for k, v in (e.properties or {}).items()
                    },
                }
            )
        if len(received) >= expected:
            done.set()

    consumer = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name=hub
    )
    worker = threading.Thread(
        target=consumer.receive_batch,
        kwargs={
            "on_event_batch": on_event_batch,
            "partition_id": "0",
            "starting_position": "-1",
            "max_wait_time": 1,
        },
        daemon=True,
    )
    worker.start()
    done.wait(timeout=30)
    consumer.close()
    worker.join(timeout=10)
    print(
        json.dumps(
            {
                "partition_ids": list(properties["partition_ids"]),
                "last_enqueued_sequence_number": partition["last_enqueued_sequence_number"],
                "received": received,
            }
        )
    )


if __name__ == "__main__":
    main()
