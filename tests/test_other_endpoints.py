"""Other AWS-compatible endpoints: what the lab does where an endpoint behaves differently from AWS.

LocalStack (2026.3) accepts ``create_stream(Tags=...)`` and drops the tags. Simulated here on the session's moto
server: a botocore handler removes ``Tags`` from the request before it is sent, so the endpoint creates the stream
without them, as LocalStack does. The lab must then tag the stream it just created (else 03 refuses it as not the
lab's and 99 can never delete it), and 99 must list what it could not delete.
"""

from __future__ import annotations

import boto3
import pytest

from kinesis_lab.cloud import teardown
from kinesis_lab.cloud.ownership import create_stream_tagged

TAGS = {"project": "kinesis-lab", "course": "kinesis-firehose-s3-databricks"}


def dropping_tags(client):
    def drop(params, **_):
        params.pop("Tags", None)

    client.meta.events.register("before-parameter-build.kinesis.CreateStream", drop)
    return client


def tags_of(kinesis, name: str) -> dict:
    return {t["Key"]: t["Value"] for t in kinesis.list_tags_for_stream(StreamName=name)["Tags"]}


def test_tags_dropped_at_create_are_added_after(clean_stack):
    kinesis = dropping_tags(boto3.client("kinesis", region_name="us-east-1"))
    how = create_stream_tagged(kinesis, "dropped-tags", TAGS)
    assert how == "tagged after creation (course, project: the endpoint dropped create_stream's Tags)"
    assert tags_of(kinesis, "dropped-tags") == TAGS
    assert teardown.delete_stream(kinesis, "dropped-tags", TAGS)["action"].startswith("deleted")


def test_tags_kept_at_create_are_not_added_again(clean_stack):
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    calls = []
    kinesis.meta.events.register("before-call.kinesis.AddTagsToStream", lambda **kw: calls.append(kw))
    assert create_stream_tagged(kinesis, "kept-tags", TAGS) == "tagged at creation"
    assert tags_of(kinesis, "kept-tags") == TAGS and calls == []


def test_a_stream_someone_made_meanwhile_is_never_tagged(clean_stack):
    kinesis = boto3.client("kinesis", region_name="us-east-1")
    kinesis.create_stream(StreamName="taken", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    with pytest.raises(kinesis.exceptions.ResourceInUseException):
        create_stream_tagged(dropping_tags(kinesis), "taken", TAGS)
    assert tags_of(kinesis, "taken") == {}
