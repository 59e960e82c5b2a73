"""Reads every record of a Kinesis stream with boto3, shard by shard from the oldest, until
COUNT user records were read, and prints one JSON line per user record:
{"shard", "sequence", "sub", "partition_key", "data" (base64), "aggregated"}.

    get_records.py ENDPOINT STREAM COUNT

Records in the KPL's aggregated format are split with AWS's aws-kinesis-agg library, as a
Python consumer of KPL data does.
"""
import base64
import json
import sys
import time

import boto3
from aws_kinesis_agg.deaggregator import deaggregate_records

endpoint, stream, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = boto3.client(
    "kinesis",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="test",
    aws_secret_access_key="test",
)
shards = client.list_shards(StreamName=stream)["Shards"]
iterators = {
    s["ShardId"]: client.get_shard_iterator(
        StreamName=stream, ShardId=s["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    for s in shards
}
read = 0
deadline = time.time() + 120
while read < count:
    if time.time() > deadline:
        raise SystemExit("read %d of %d user records before the deadline" % (read, count))
    progressed = False
    for shard, iterator in list(iterators.items()):
        if iterator is None:
            continue
        answer = client.get_records(ShardIterator=iterator)
        iterators[shard] = answer.get("NextShardIterator")
        for record in answer["Records"]:
            progressed = True
            # The deaggregator works on Lambda-style records: base64 data, camelCase names.
            lambda_record = {
                "eventSource": "aws:kinesis",
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "data": base64.b64encode(record["Data"]).decode(),
                    "partitionKey": record["PartitionKey"],
                    "sequenceNumber": record["SequenceNumber"],
                    "approximateArrivalTimestamp": record["ApproximateArrivalTimestamp"].timestamp(),
                }
            }
            users = deaggregate_records([lambda_record])
            if not users:
                raise SystemExit("aws-kinesis-agg could not read record %s" % record["SequenceNumber"])
            for sub, user in enumerate(users):
                data = user["kinesis"]["data"]
                if isinstance(data, bytes):
                    data = data.decode()
                print(json.dumps({
                    "shard": shard,
                    "sequence": record["SequenceNumber"],
                    "sub": sub,
                    "partition_key": user["kinesis"]["partitionKey"],
                    "data": data,
                    "aggregated": bool(user["kinesis"].get("aggregated")),
                }))
                read += 1
    if not progressed:
        time.sleep(0.1)
