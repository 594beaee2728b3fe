"""10. An idle local stack's CPU: moto + the local Firehose service with one delivery stream on a 2-shard stream and
nothing put, over a stretch of seconds (the service polls less often when it has no work: next_poll_in)."""

from __future__ import annotations

import json
import time

from common import BENCH, cpu_seconds, create_stream, load, say


def bench_idle_stack(ctx: dict) -> dict:
    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream
    from kinesis_lab.local import stack

    session, tag = ctx["session"], ctx["tag"]
    kinesis, s3, iam, firehose = (session.client(n) for n in ("kinesis", "s3", "iam", "firehose"))
    name = f"bench-idle-{tag}"
    create_stream(kinesis, name)
    s3.create_bucket(Bucket=name)
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "firehose.amazonaws.com"}}]}
    role_arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]
    stream_arn = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]["StreamARN"]
    create_delivery_stream(firehose, build_delivery_stream_request(
        delivery_stream_name=name, stream_arn=stream_arn, role_arn=role_arn, bucket_arn=f"arn:aws:s3:::{name}",
        prefix="idle/", error_output_prefix=None, buffer_size_mb=64, buffer_interval_seconds=60))
    state = stack.read_state(BENCH / "stack")
    pids = {"moto": state.moto_pid, "firehose": state.firehose_pid}
    time.sleep(5)  # the service finds the delivery stream, reads its empty shards, backs off
    seconds = 10 if ctx["quick"] else 30
    before = {k: cpu_seconds(p) for k, p in pids.items()}
    time.sleep(seconds)
    cores = {k: round((cpu_seconds(p) - before[k]) / seconds, 3) for k, p in pids.items()}
    firehose.delete_delivery_stream(DeliveryStreamName=name)
    total = round(sum(cores.values()), 3)
    measured = f"{total:.3f} of a core (moto {cores['moto']:.3f}, Firehose service {cores['firehose']:.3f}) over {seconds} s"
    say(f"  {measured}; {load()}")
    return {"figure": "an idle local stack (one delivery stream, 2 shards, nothing put): CPU", "measured": measured,
            "target": "report", "passed": None, "correct": True, "figures": {"cores": cores, "seconds": seconds}}
