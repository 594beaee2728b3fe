"""The original course's own files against the local stack: its delivery.json (refused at create, as on AWS)
and its producer (tests/original_course/, recreated from its description; only the dataset path changed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

HERE = Path(__file__).parent / "original_course"


def test_original_delivery_json_is_refused_at_create_naming_the_fix(aws_clients):
    request = json.loads((HERE / "delivery.json").read_text())
    aws_clients("s3").create_bucket(Bucket="jm-demo-s3-lab")
    aws_clients("kinesis").create_stream(StreamName="jm-demo-kinesis-lab",
                                         StreamModeDetails={"StreamMode": "ON_DEMAND"})
    firehose = aws_clients("firehose")
    with pytest.raises(ClientError) as refused:
        firehose.create_delivery_stream(**request)
    assert refused.value.response["Error"] == {
        "Code": "InvalidArgumentException",
        "Message": "ErrorOutputPrefix: '!{firehose:error-output-type/' at position 7 is never closed: "
                   "add the missing '}'",
    }
    assert firehose.list_delivery_streams()["DeliveryStreamNames"] == []
