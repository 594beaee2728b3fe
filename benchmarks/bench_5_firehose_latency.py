"""5. The local Firehose's latency: put -> object visible in S3 with IntervalInSeconds=2."""

from __future__ import annotations

import json
import random
import statistics
import time

from common import create_stream, load, say


def bench_firehose_latency(ctx: dict) -> dict:
    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream

    session = ctx["session"]
    kinesis, s3, iam, firehose = (session.client(n) for n in ("kinesis", "s3", "iam", "firehose"))
    tag = ctx["tag"]
    stream, bucket, prefix, interval = f"bench-fh-{tag}", f"bench-fh-{tag}", "latency/", 2
    create_stream(kinesis, stream)
    s3.create_bucket(Bucket=bucket)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "firehose.amazonaws.com"}}]}
    role_arn = iam.create_role(RoleName=f"bench-fh-{tag}", AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    stream_arn = kinesis.describe_stream_summary(StreamName=stream)["StreamDescriptionSummary"]["StreamARN"]
    request = build_delivery_stream_request(
        delivery_stream_name=f"bench-fh-{tag}", stream_arn=stream_arn, role_arn=role_arn,
        bucket_arn=f"arn:aws:s3:::{bucket}", prefix=prefix, error_output_prefix=None, buffer_size_mb=64,
        buffer_interval_seconds=interval)
    create_delivery_stream(firehose, request)
    say(f"  delivery stream with BufferingHints IntervalInSeconds={interval}, SizeInMBs=64; "
        f"S3 polled every 50 ms; {load()}")

    def keys() -> set[str]:
        return {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}

    def one(n: int) -> float:
        seen = keys()
        records = [{"Data": f'{{"n":{n},"i":{i}}}\n'.encode(), "PartitionKey": f"{n}-{i}"} for i in range(100)]
        kinesis.put_records(StreamName=stream, Records=records)
        put_at = time.perf_counter()
        deadline = put_at + 30
        while time.perf_counter() < deadline:
            if keys() - seen:
                return time.perf_counter() - put_at
            time.sleep(0.05)
        raise TimeoutError("no object in S3 within 30 s: is the local Firehose service running?")

    warm_up = one(0)  # the service finds the new delivery stream first
    samples = []
    for n in range(1, 4 if ctx["quick"] else 9):
        time.sleep(random.uniform(0, 0.5))  # not always in the same phase as the service's poll loop
        samples.append(one(n))
    worst, median = max(samples), statistics.median(samples)
    say(f"  warm-up {warm_up:.2f} s; samples: {', '.join(f'{s:.2f}' for s in samples)} s; "
        f"max {worst:.2f} s, median {median:.2f} s; {load()}")
    return {"figure": "local Firehose: put -> object visible in S3 (IntervalInSeconds=2)",
            "measured": f"max {worst:.2f} s, median {median:.2f} s over {len(samples)} samples",
            "target": f"<= {interval + 1} s (interval + 1 s)", "passed": worst <= interval + 1,
            "figures": {"samples": [round(s, 3) for s in samples], "max": round(worst, 3),
                        "median": round(median, 3), "warm_up": round(warm_up, 3)}}
