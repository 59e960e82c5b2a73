"""Publishes with Google's Python client, as a Pub/Sub user would (PUBSUB_EMULATOR_HOST set).

usage: publish.py PROJECT TOPIC
"""
import sys

from google.cloud import pubsub_v1

project, topic = sys.argv[1], sys.argv[2]
publisher = pubsub_v1.PublisherClient(
    publisher_options=pubsub_v1.types.PublisherOptions(enable_message_ordering=True)
)
path = publisher.topic_path(project, topic)
futures = [
    publisher.publish(path, b"from python", ordering_key="order-7", trace="abc", origin="py"),
    publisher.publish(path, b"no key, no attributes"),
]
for future in futures:
    print(future.result(timeout=30), flush=True)
