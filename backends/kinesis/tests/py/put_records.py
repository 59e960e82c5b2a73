"""Writes records to a Kinesis stream with boto3, as a Python user of Kinesis would.

    put_records.py ENDPOINT STREAM COUNT KEYS [--aggregate]

Record i has partition key "key-{i % KEYS}" and data "py-{i:06}". With --aggregate the user
records are packed by AWS's aws-kinesis-agg library (the KPL's format), one aggregated record
per partition key run of up to 100 user records, each user record keeping its own partition
key. Prints one JSON line per PutRecords entry: {"shard", "sequence", "users": [payloads]}.
"""
import json
import sys

import boto3
from aws_kinesis_agg.aggregator import RecordAggregator

endpoint, stream, count, keys = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
aggregate = "--aggregate" in sys.argv[5:]
client = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)

entries = []  # (partition key, explicit hash key, data, user payloads)
if aggregate:
    # Aggregates mix keys, as the KPL does: 100 consecutive user records per aggregate. The
    # aggregated record goes to the shard of its first user record's key.
    aggregator = RecordAggregator()
    users = []
    for i in range(count):
        payload = "py-%06d" % i
        aggregator.add_user_record("key-%d" % (i % keys), payload.encode())
        users.append(payload)
        if len(users) == 100 or i == count - 1:
            pk, ehk, data = aggregator.clear_and_get().get_contents()
            entries.append((pk, ehk, data, users))
            users = []
else:
    for i in range(count):
        payload = "py-%06d" % i
        entries.append(("key-%d" % (i % keys), None, payload.encode(), [payload]))

for start in range(0, len(entries), 500):
    batch = entries[start : start + 500]
    pending = list(batch)
    while pending:
        records = []
        for pk, ehk, data, _ in pending:
            record = {"PartitionKey": pk, "Data": data}
            if ehk:
                record["ExplicitHashKey"] = ehk
            records.append(record)
        answer = client.put_records(StreamName=stream, Records=records)
        retry = []
        for entry, result in zip(pending, answer["Records"]):
            if "ErrorCode" in result:
                retry.append(entry)
            else:
                print(json.dumps({"shard": result["ShardId"], "sequence": result["SequenceNumber"], "users": entry[3]}))
        if retry and len(retry) == len(pending):
            raise SystemExit("every record refused: %s" % answer["Records"][0])
        pending = retry
