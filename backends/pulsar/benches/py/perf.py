"""perf.py SERVICE_URL TOPIC COUNT BATCHED: the benchmark's peer, Apache's Python client
(pulsar-client, the C++ client underneath) doing the bench's work on its own topic: COUNT
events of 100 bytes with a key out of 1000 and one property, each its own message or batches
of up to 1000 (BATCHED = 1), 1000 sends in flight before waiting; then a Failover consumer with
a prefetch of 1000 per partition reads and acks them all, timed from its first message.
Prints `produce RATE` and `consume RATE` (events per second)."""
import sys
import threading
import time

import pulsar

url, topic, count, batched = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
CHUNK = 1000
client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
producer = client.create_producer(
    topic,
    batching_enabled=batched,
    batching_max_messages=CHUNK,
    batching_max_allowed_size_in_bytes=128 * 1024,
    batching_max_publish_delay_ms=5,
    max_pending_messages=CHUNK,
    block_if_queue_full=True,
)
payload = b"x" * 100
failures = []
done = threading.Semaphore(0)


def sent(result, _id):
    if result != pulsar.Result.Ok:
        failures.append(result)
    done.release()


started = time.monotonic()
for first in range(0, count, CHUNK):
    n = min(CHUNK, count - first)
    for i in range(first, first + n):
        producer.send_async(
            payload, sent, partition_key=f"key-{i % 1000:04}", properties={"seq": str(i)}
        )
    # Like the Rust sides: a chunk's receipts are awaited before the next chunk goes out.
    for _ in range(n):
        done.acquire()
produce_rate = count / (time.monotonic() - started)
producer.close()
if failures:
    sys.exit(f"{len(failures)} sends failed: {failures[:3]}")

consumer = client.subscribe(
    topic,
    f"bench-py-{time.time_ns()}",
    consumer_type=pulsar.ConsumerType.Failover,
    initial_position=pulsar.InitialPosition.Earliest,
    receiver_queue_size=CHUNK,
)
kept = 0
msg = consumer.receive(timeout_millis=60_000)
consumer.acknowledge(msg)
started = time.monotonic()
for _ in range(count - 1):
    msg = consumer.receive(timeout_millis=60_000)
    kept += len(msg.data()) + len(msg.properties())
    consumer.acknowledge(msg)
consume_rate = (count - 1) / (time.monotonic() - started)
consumer.close()
client.close()
print(f"produce {produce_rate:.1f}")
print(f"consume {consume_rate:.1f}")
