"""produce.py SERVICE_URL TOPIC COUNT: publish COUNT messages as a Pulsar user would, with the
official client: a partition key, properties, an event time, batching on (so tributary reads
batched messages). Prints one line when every send is acknowledged."""
import sys

import pulsar

url, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
producer = client.create_producer(
    topic,
    batching_enabled=True,
    block_if_queue_full=True,
    batching_max_messages=100,
    batching_max_publish_delay_ms=5,
)
failures = []
for i in range(count):
    producer.send_async(
        f"py-{i}".encode(),
        lambda res, _id: failures.append(res) if res != pulsar.Result.Ok else None,
        partition_key=f"key-{i % 10}",
        properties={"origin": "py", "seq": str(i)},
        event_timestamp=1_700_000_000_000 + i,
    )
producer.flush()
producer.close()
client.close()
if failures:
    sys.exit(f"{len(failures)} sends failed: {failures[:3]}")
print(f"sent {count}")
