"""latency.py PROJECT TOPIC SUBSCRIPTION COUNT: the latency mode's peer, Google's Python client
(PUBSUB_EMULATOR_HOST set): a streaming pull on SUBSCRIPTION (made beforehand, as tributary
makes one), then COUNT times one message of 100 bytes with an ordering key out of 1000 and one
attribute published on TOPIC (its message id awaited), received and acked; the publisher
with the client's default batch settings (10 ms at most before a batch goes) and ordering on.
Prints one line `latency` and the microseconds of each publish-to-receive, space separated
(the first message, sent before the timing, left out). Before each message, a pause of up to
10 ms (pstest's delivery tick) from the same sequence as the Rust sides' (probe::latency_gap)."""
import queue
import sys
import time

from google.cloud import pubsub_v1

project, topic, subscription, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
publisher = pubsub_v1.PublisherClient(
    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
)
subscriber = pubsub_v1.SubscriberClient()
arrived = queue.Queue()


def on_message(message):
    arrived.put(message)


pull = subscriber.subscribe(subscriber.subscription_path(project, subscription), on_message)
path = publisher.topic_path(project, topic)
payload = b"x" * 100
micros = []
for i in range(count + 1):
    time.sleep((i * 2654435761) % 1000 / 1000 * 0.010)
    started = time.perf_counter()
    publisher.publish(path, payload, ordering_key="key-%04d" % (i % 1000), seq=str(i)).result(
        timeout=30
    )
    message = arrived.get(timeout=30)
    if i > 0:
        micros.append((time.perf_counter() - started) * 1e6)
    message.ack()
pull.cancel()
print("latency " + " ".join("%.0f" % m for m in micros))
