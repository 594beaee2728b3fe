"""Prefix expressions and object names (rules and examples from AWS's 'Custom Prefixes' page)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

import pytest

from kinesis_lab.cloud import prefixes as ex

WHEN = datetime(2018, 8, 27, 10, 30, 5, tzinfo=UTC)
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("yyyy/MM/dd/HH/", "2018/08/27/10/"),
        ("yyyy-MM-dd_HH=mm=ss", "2018-08-27_10=30=05"),
        ("yy", "18"),
        ("uuuu", "2018"),
        ("y", "2018"),
        ("yyyyy", "02018"),
        ("M/d/H/m/s", "8/27/10/30/5"),
        ("'year='yyyy'/month='MM", "year=2018/month=08"),
        ("''HH''", "'10'"),
        ("'it''s'", "it's"),  # '' inside quoted text is a quote too
        ("'o''clock'HH", "o'clock10"),
    ],
)
def test_timestamp_patterns(pattern, expected):
    assert ex.format_timestamp(pattern, WHEN) == expected


def test_timestamp_is_converted_to_utc():
    madrid = WHEN.astimezone(timezone(timedelta(hours=2)))
    assert madrid.hour == 12
    assert ex.format_timestamp("HH", madrid) == "10"


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("", "empty timestamp pattern: write one such as yyyy/MM/dd"),
        ("yyyy/EEE", "'EEE' is valid in Java but not supported by the local Firehose service: "
                     "use y, u, M, d, H, m, s (e.g. yyyy/MM/dd/HH)"),
        ("yyyy/MMM", "'MMM' (month as text) is not supported by the local Firehose service: use MM"),
        ("ddd", "'ddd': too many pattern letters, use dd"),
        ("yyyy/bb", "'bb': 'b' is not a Java date pattern letter; quote literal text as '...'"),
        ("yyyy'x", "quote at position 4 is never closed: add the closing '"),
        ("yyyy[MM]", "'[' is reserved in Java date patterns: quote it as '['"),
    ],
)  # fmt: skip
def test_bad_timestamp_patterns_say_why(pattern, message):
    with pytest.raises(ex.ExpressionError) as err:
        ex.format_timestamp(pattern, WHEN)
    assert str(err.value) == message


def test_every_timestamp_in_a_prefix_is_the_same_instant_and_random_strings_differ():
    out = ex.evaluate(
        "a/!{timestamp:yyyy}/!{firehose:random-string}/!{firehose:random-string}/!{timestamp:HH}", WHEN
    )
    parts = out.split("/")
    assert parts[0] == "a" and parts[1] == "2018" and parts[4] == "10"
    assert len(parts[2]) == len(parts[3]) == 11 and parts[2] != parts[3]


def test_error_output_type_only_evaluates_when_given():
    assert ex.evaluate("e/!{firehose:error-output-type}/", WHEN, error_output_type="processing-failed") == (
        "e/processing-failed/"
    )
    with pytest.raises(ex.ExpressionError):
        ex.evaluate("e/!{firehose:error-output-type}/", WHEN)


def test_aws_documented_examples():
    at = datetime(2018, 7, 6, 23, 0, tzinfo=UTC)
    prefix = "myPrefix/year=!{timestamp:yyyy}/month=!{timestamp:MM}/day=!{timestamp:dd}/hour=!{timestamp:HH}/"
    assert ex.evaluate(prefix, at) == "myPrefix/year=2018/month=07/day=06/hour=23/"
    error_prefix = (
        "myErrorPrefix/!{timestamp:'year='yyyy'/month='MM'/day='dd'/hour='HH}/!{firehose:error-output-type}"
    )
    assert ex.evaluate(error_prefix, at, error_output_type="processing-failed") == (
        "myErrorPrefix/year=2018/month=07/day=06/hour=23/processing-failed"
    )


@pytest.mark.parametrize(
    ("prefix", "evaluated"),
    [
        ("", "2018/08/27/10/"),  # the default prefix
        (None, "2018/08/27/10/"),
        ("bronze/", "bronze/2018/08/27/10/"),
        ("myFirehosePrefix", "myFirehosePrefix2018/08/27/10/"),  # appended as is: no "/" added
        ("rand=!{firehose:random-string}/", None),  # no timestamp expression: still appended
        (
            "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/",
            "bronze/ingestion_date=2018/08/27/",
        ),  # not appended
    ],
)
def test_default_timestamp_is_appended_only_without_a_timestamp_expression(prefix, evaluated):
    out = ex.evaluate(ex.effective_prefix(prefix), WHEN)
    if evaluated is None:
        assert re.fullmatch(r"rand=.{11}/2018/08/27/10/", out)
    else:
        assert out == evaluated


def test_null_error_prefix_is_prefix_plus_error_type_plus_default_time():
    assert ex.evaluate(
        ex.effective_error_prefix(None, "bronze/"), WHEN, error_output_type="processing-failed"
    ) == ("bronze/processing-failed/2018/08/27/10/")
    assert ex.evaluate(ex.effective_error_prefix("", ""), WHEN, error_output_type="processing-failed") == (
        "processing-failed/2018/08/27/10/"
    )


def test_object_key_format():
    key = ex.object_key(
        "bronze/d=!{timestamp:yyyy-MM-dd}/", stream_name="salud-firehose-tos3", version="1", when=WHEN
    )
    assert re.fullmatch(rf"bronze/d=2018-08-27/salud-firehose-tos3-1-2018-08-27-10-30-05-{UUID}", key), key
    gz = ex.object_key("", stream_name="s", version=3, when=WHEN, compression="GZIP")
    assert re.fullmatch(rf"2018/08/27/10/s-3-2018-08-27-10-30-05-{UUID}\.gz", gz), gz
    assert key != ex.object_key("bronze/d=!{timestamp:yyyy-MM-dd}/", stream_name="salud-firehose-tos3",
                                version="1", when=WHEN)  # fmt: skip


def test_error_object_key_format():
    key = ex.error_object_key(
        "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/", "bronze/",
        error_output_type="processing-failed", stream_name="s", version="1", when=WHEN,
    )  # fmt: skip
    assert re.fullmatch(rf"errors/processing-failed/2018/08/27/s-1-2018-08-27-10-30-05-{UUID}", key), key


@pytest.mark.parametrize(
    ("template", "error_prefix", "expected"),
    [
        ("a/!{timestamp:yyyy}/", False, []),
        ("e/!{firehose:error-output-type}/", True, []),
        ("a/!{timestamp:yyyy/", False, ["Prefix: '!{timestamp:yyyy/' at position 2 is never closed: add the missing '}'"]),
        ("a/!{timestamp:yyyy}}/", False, ["Prefix: '}' at position 19 closes no '!{': remove it or add the missing '!{'"]),
        ("!{firehose:error-output-type}", False,
         ["Prefix: !{firehose:error-output-type} is only allowed in ErrorOutputPrefix: remove it from Prefix"]),
        ("!{firehose:uuid}", False,
         ["Prefix: !{firehose:uuid} is unknown: the firehose namespace has only 'random-string' and 'error-output-type'"]),
        ("!{partitionKeyFromQuery:id}/", False,
         ["Prefix: !{partitionKeyFromQuery:id} needs dynamic partitioning, which the local Firehose service does not "
          "support: use !{timestamp:...} or !{firehose:random-string} instead"]),
        ("!{date:yyyy}", False,
         ["Prefix: !{date:yyyy} has an unknown namespace 'date': use !{timestamp:<pattern>}, "
          "!{firehose:random-string} or !{firehose:error-output-type}"]),
        ("!{timestamp:yyyy/EE}", False,
         ["Prefix: !{timestamp:yyyy/EE}: 'EE' is valid in Java but not supported by the local Firehose service: "
          "use y, u, M, d, H, m, s (e.g. yyyy/MM/dd/HH)"]),
        ("!{timestamp}", False, ["Prefix: !{timestamp}: empty timestamp pattern: write one such as yyyy/MM/dd"]),
    ],
)  # fmt: skip
def test_problems(template, error_prefix, expected):
    assert ex.problems("Prefix", template, error_prefix=error_prefix) == expected
