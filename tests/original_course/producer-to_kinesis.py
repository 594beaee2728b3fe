# The original course's producer, recreated from its description (REFERENCE.md): only the dataset path changed
# (it was a hard-coded Windows path; here the first argument). Kept as it was: iterrows, batches of 100,
# put_records, 0.1 s pause, FailedRecordCount printed but failures never resent, json.dumps(row) + "\n",
# random uuid partition keys, no event_id.
import json
import sys
import time
import uuid

import boto3
import pandas as pd

STREAM_NAME = "jm-demo-kinesis-lab"
REGION = "us-east-1"
CSV_PATH = sys.argv[1]

kinesis = boto3.client("kinesis", region_name=REGION)
df = pd.read_csv(CSV_PATH)

batch = []
for index, row in df.iterrows():  # noqa: B007 (as the original)
    row = row.to_dict()
    batch.append({"Data": json.dumps(row) + "\n", "PartitionKey": str(uuid.uuid4())})
    if len(batch) == 100:
        response = kinesis.put_records(StreamName=STREAM_NAME, Records=batch)
        print("FailedRecordCount:", response["FailedRecordCount"])
        batch = []
        time.sleep(0.1)
if batch:
    response = kinesis.put_records(StreamName=STREAM_NAME, Records=batch)
    print("FailedRecordCount:", response["FailedRecordCount"])
print("done")
