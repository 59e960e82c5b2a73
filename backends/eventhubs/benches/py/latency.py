"""latency.py CONN HUB COUNT: the latency mode's peer, Microsoft's Python client (azure-eventhub,
its asyncio API): a consumer of every partition of HUB from the start (prefetch 300, as
tributary's), then COUNT times one event of 100 bytes with a key out of 20 and one property
sent in a batch of its own (the send awaited) and received. CONN is a connection string with
UseDevelopmentEmulator=true. Prints one line `latency` and the microseconds of each
send-to-receive, space separated (the first event, sent before the timing, left out).

The asyncio API, not the blocking one: the blocking consumer serves the partitions in turn,
each waiting up to its socket timeout (0.2 s), so an event waited 200-600 ms there."""
import asyncio
import sys
import time

from azure.eventhub import EventData
from azure.eventhub._pyamqp import _platform
from azure.eventhub.aio import EventHubConsumerClient, EventHubProducerClient

# As in the interop tests' peer: on loopback the kernel may report a TCP_MAXSEG it then refuses.
_platform.KNOWN_TCP_OPTS.discard("TCP_MAXSEG")


async def main(conn, hub, count):
    arrived = asyncio.Queue()
    consumer = EventHubConsumerClient.from_connection_string(
        conn, consumer_group="$Default", eventhub_name=hub
    )

    async def on_event(context, event):
        await arrived.put(event)

    receiving = asyncio.create_task(
        consumer.receive(on_event=on_event, starting_position="-1", prefetch=300)
    )
    producer = EventHubProducerClient.from_connection_string(conn, eventhub_name=hub)
    payload = b"x" * 100
    micros = []
    async with producer:
        for i in range(count + 1):
            started = time.perf_counter()
            batch = await producer.create_batch(partition_key="key-%d" % (i % 20))
            event = EventData(payload)
            event.properties = {"n": str(i)}
            batch.add(event)
            await producer.send_batch(batch)
            await asyncio.wait_for(arrived.get(), 60)
            if i > 0:
                micros.append((time.perf_counter() - started) * 1e6)
    await consumer.close()
    receiving.cancel()
    print("latency " + " ".join("%.0f" % m for m in micros))


asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
