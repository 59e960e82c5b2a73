"""consume.py SERVICE_URL TOPIC SUBSCRIPTION COUNT PREFETCH: read COUNT messages with the
official client (PREFETCH messages queued per partition) and print each as a JSON line (data
in base64, key, properties, event time, partition)."""
import base64
import json
import sys

import pulsar

url, topic, subscription = sys.argv[1], sys.argv[2], sys.argv[3]
count, prefetch = int(sys.argv[4]), int(sys.argv[5])
client = pulsar.Client(url, logger=pulsar.ConsoleLogger(pulsar.LoggerLevel.Error))
consumer = client.subscribe(
    topic,
    subscription,
    initial_position=pulsar.InitialPosition.Earliest,
    receiver_queue_size=prefetch,
)
for _ in range(count):
    msg = consumer.receive(timeout_millis=60_000)
    print(
        json.dumps(
            {
                "data": base64.b64encode(msg.data()).decode(),
                "key": msg.partition_key(),
                "properties": msg.properties(),
                "event_time": msg.event_timestamp(),
                "partition": msg.message_id().partition(),
            }
        )
    )
    consumer.acknowledge(msg)
consumer.close()
client.close()
