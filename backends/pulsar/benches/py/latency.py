"""latency.py SERVICE_URL TOPIC COUNT: the latency mode's peer, Apache's Python client
(pulsar-client, the C++ client underneath): a Failover consumer on TOPIC, then COUNT times one
event of 100 bytes with a key out of 1000 sent (its receipt awaited), received and acked,
after one more that is not timed (subscribing and the first fetch), as the Rust sides do.
Prints one line `latency` and the microseconds of each send-to-receive, space separated."""
import sys
import time

import pulsar

url, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
consumer = client.subscribe(
    topic,
    "bench-py-lat",
    consumer_type=pulsar.ConsumerType.Failover,
    initial_position=pulsar.InitialPosition.Earliest,
    receiver_queue_size=1000,
)
producer = client.create_producer(topic, batching_enabled=False)
payload = b"x" * 100
micros = []
for i in range(count + 1):
    started = time.perf_counter()
    producer.send(payload, partition_key="key-%04d" % (i % 1000))
    message = consumer.receive(timeout_millis=30000)
    if i > 0:
        micros.append((time.perf_counter() - started) * 1e6)
    consumer.acknowledge(message)
print("latency " + " ".join("%.0f" % m for m in micros))
client.close()
