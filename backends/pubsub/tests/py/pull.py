"""Pulls with Google's Python client and prints each message as one JSON line.

usage: pull.py PROJECT SUBSCRIPTION COUNT
"""
import base64
import json
import sys
import time

from google.cloud import pubsub_v1

project, subscription, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
subscriber = pubsub_v1.SubscriberClient()
path = subscriber.subscription_path(project, subscription)
seen = 0
deadline = time.time() + 60
while seen < count and time.time() < deadline:
    response = subscriber.pull(request={"subscription": path, "max_messages": count}, timeout=30)
    for received in response.received_messages:
        message = received.message
        print(json.dumps({
            "data": base64.b64encode(message.data).decode(),
            "attributes": dict(message.attributes),
            "ordering_key": message.ordering_key,
        }, sort_keys=True), flush=True)
        subscriber.acknowledge(request={"subscription": path, "ack_ids": [received.ack_id]})
        seen += 1
sys.exit(0 if seen >= count else 1)
