"""Firehose S3 prefix expressions and object names, as AWS documents them.

Sources (Amazon Data Firehose Developer Guide):

* "Custom Prefixes for Amazon S3 Objects" (docs.aws.amazon.com/firehose/latest/dev/s3-prefixes.html):
  object key = ``<evaluated prefix><suffix>``; expressions ``!{namespace:value}`` with namespaces
  ``timestamp`` (a Java DateTimeFormatter pattern, UTC, evaluated at "the approximate arrival timestamp
  of the oldest record that's contained in the Amazon S3 object being written"; every instance in one
  prefix is the same instant; text in single quotes is literal), ``firehose:random-string`` (11 random
  characters, a new one per instance) and ``firehose:error-output-type`` (only in ErrorOutputPrefix);
  ``partitionKeyFromQuery`` / ``partitionKeyFromLambda`` need dynamic partitioning. Semantic rules: a
  Prefix without a timestamp expression gets ``!{timestamp:yyyy/MM/dd/HH/}`` appended; ``!{`` may only
  start an expression; ErrorOutputPrefix may be null only if Prefix has no expressions, and when it has
  expressions it must contain ``!{firehose:error-output-type}``; Prefix can't contain that one.
* "Amazon S3 Object Name Format" (.../basic-deliver.html#s3-object-name, .../s3-object-name.html):
  suffix = ``<stream name>-<stream version>-<year>-<month>-<day>-<hour>-<minute>-<second>-<uuid><file
  extension>``, version starting at 1; default time prefix ``YYYY/MM/dd/HH`` in UTC.

Choices where the docs are vague or contradict themselves: the suffix's time is the same instant as
the prefix's (the oldest record's arrival); a null ErrorOutputPrefix evaluates to
``<Prefix>processing-failed/YYYY/MM/dd/HH/``; ``GZIP`` objects end in ``.gz``.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

DEFAULT_TIMESTAMP_SUFFIX = "!{timestamp:yyyy/MM/dd/HH/}"
ERROR_OUTPUT_TYPE = "!{firehose:error-output-type}"
DYNAMIC_PARTITIONING_NAMESPACES = ("partitionKeyFromQuery", "partitionKeyFromLambda")
FILE_EXTENSIONS = {"GZIP": ".gz"}

# every letter Java's DateTimeFormatter knows (others are an error there too), and the ones done here
JAVA_PATTERN_LETTERS = set("GuyDMLdQqYwWEecFaBhKkHmsSAnNVvzOXxZp")
SUPPORTED_PATTERN_LETTERS = "yuMdHms"
JAVA_RESERVED = set("[]#{}")


def static_prefix(prefix: str) -> str:
    """The part of a Firehose prefix before its first ``!{...}`` expression: what to list in S3
    (``bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/`` -> ``bronze/ingestion_date=``)."""
    return prefix.split("!{", 1)[0]


def static_folder(prefix: str) -> str:
    """The folder that holds everything under ``prefix``: ``static_prefix`` up to its last ``/``
    (``bronze/ingestion_date=!{...}/`` -> ``bronze/``)."""
    head = static_prefix(prefix)
    return head[: head.rfind("/") + 1]


class ExpressionError(ValueError):
    """A prefix or timestamp pattern that cannot be evaluated; the message says why and how to fix it."""


@dataclass(frozen=True)
class Expression:
    namespace: str  # "timestamp", "firehose", or anything else (reported by problems())
    value: str
    start: int  # position of "!{" in the template


def split_template(template: str) -> tuple[list[str | Expression], list[str]]:
    """Split a prefix into literal text and ``!{namespace:value}`` expressions.

    Returns (parts, problems); ``problems`` lists unbalanced ``!{`` / ``}`` one per line."""
    parts: list[str | Expression] = []
    problems: list[str] = []
    pos = 0
    literal = ""
    while pos < len(template):
        if template.startswith("!{", pos):
            end = template.find("}", pos + 2)
            nested = template.find("!{", pos + 2)
            if end == -1 or (nested != -1 and nested < end):
                fragment = template[pos : nested if nested != -1 else len(template)]
                problems.append(f"{fragment!r} at position {pos} is never closed: add the missing '}}'")
                literal += template[pos : pos + 2]
                pos += 2
                continue
            if literal:
                parts.append(literal)
                literal = ""
            body = template[pos + 2 : end]
            namespace, colon, value = body.partition(":")
            parts.append(Expression(namespace, value if colon else "", pos))
            pos = end + 1
        elif template[pos] == "}":
            problems.append(f"'}}' at position {pos} closes no '!{{': remove it or add the missing '!{{'")
            literal += "}"
            pos += 1
        else:
            literal += template[pos]
            pos += 1
    if literal:
        parts.append(literal)
    return parts, problems


def expressions(template: str) -> list[Expression]:
    return [p for p in split_template(template or "")[0] if isinstance(p, Expression)]


def has_expressions(template: str | None) -> bool:
    return "!{" in (template or "")


def has_timestamp(template: str | None) -> bool:
    return any(e.namespace == "timestamp" for e in expressions(template or ""))


def problems(field: str, template: str | None, *, error_prefix: bool) -> list[str]:
    """Everything in one prefix that real Firehose rejects (or the local service cannot evaluate)."""
    if not template:
        return []
    parts, found = split_template(template)
    out = [f"{field}: {p}" for p in found]
    for part in parts:
        if not isinstance(part, Expression):
            continue
        shown = f"!{{{part.namespace}:{part.value}}}" if part.value else f"!{{{part.namespace}}}"
        if part.namespace == "timestamp":
            try:
                format_timestamp(part.value, datetime(2018, 8, 27, 10, 30, tzinfo=UTC))
            except ExpressionError as exc:
                out.append(f"{field}: {shown}: {exc}")
        elif part.namespace == "firehose":
            if part.value == "error-output-type":
                if not error_prefix:
                    out.append(
                        f"{field}: {shown} is only allowed in ErrorOutputPrefix: remove it from Prefix"
                    )
            elif part.value != "random-string":
                out.append(
                    f"{field}: {shown} is unknown: the firehose namespace has only "
                    "'random-string' and 'error-output-type'"
                )
        elif part.namespace in DYNAMIC_PARTITIONING_NAMESPACES:
            out.append(
                f"{field}: {shown} needs dynamic partitioning, which the local Firehose service does not "
                "support: use !{timestamp:...} or !{firehose:random-string} instead"
            )
        else:
            out.append(
                f"{field}: {shown} has an unknown namespace {part.namespace!r}: use "
                "!{timestamp:<pattern>}, !{firehose:random-string} or !{firehose:error-output-type}"
            )
    return out


def format_timestamp(pattern: str, when: datetime) -> str:
    """Format ``when`` (converted to UTC) with a Java DateTimeFormatter pattern (the common subset)."""
    if not pattern:
        raise ExpressionError("empty timestamp pattern: write one such as yyyy/MM/dd")
    when = when.astimezone(UTC)
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            text, i = _quoted(pattern, i)
            out.append(text)
            continue
        if char in JAVA_RESERVED:
            raise ExpressionError(f"{char!r} is reserved in Java date patterns: quote it as '{char}'")
        if not ("a" <= char.lower() <= "z"):
            out.append(char)
            i += 1
            continue
        count = len(re.match(f"{char}+", pattern[i:]).group())
        out.append(_format_field(char, count, when))
        i += count
    return "".join(out)


def _quoted(pattern: str, start: int) -> tuple[str, int]:
    """Literal text from the quote at ``start``: ``''`` is one quote, inside quotes or alone."""
    text, i = "", start + 1
    while i < len(pattern):
        if pattern[i] == "'":
            if pattern.startswith("''", i) and i > start + 1:  # doubled quote inside quoted text
                text += "'"
                i += 2
                continue
            if i == start + 1:  # '' on its own
                return "'", i + 1
            return text, i + 1
        text += pattern[i]
        i += 1
    raise ExpressionError(f"quote at position {start} is never closed: add the closing '")


def _format_field(letter: str, count: int, when: datetime) -> str:
    run = letter * count
    if letter not in JAVA_PATTERN_LETTERS:
        raise ExpressionError(
            f"{run!r}: {letter!r} is not a Java date pattern letter; quote literal text as '...'"
        )
    if letter not in SUPPORTED_PATTERN_LETTERS:
        raise ExpressionError(
            f"{run!r} is valid in Java but not supported by the local Firehose service: "
            "use y, u, M, d, H, m, s (e.g. yyyy/MM/dd/HH)"
        )
    if letter in "yu":
        return f"{when.year % 100:02d}" if count == 2 else f"{when.year:0{count}d}"
    if count > 2:
        if letter == "M":
            raise ExpressionError(
                f"{run!r} (month as text) is not supported by the local Firehose service: use MM"
            )
        raise ExpressionError(f"{run!r}: too many pattern letters, use {letter * 2}")
    value = {"M": when.month, "d": when.day, "H": when.hour, "m": when.minute, "s": when.second}[letter]
    return f"{value:0{count}d}"


def random_string() -> str:
    """11 random characters, like AWS's example ``046b6c7f-0b``."""
    return str(uuid.uuid4())[:11]


def evaluate(template: str, when: datetime, *, error_output_type: str | None = None) -> str:
    """Evaluate every expression of ``template`` at ``when`` (raises ExpressionError on bad input)."""
    parts, found = split_template(template or "")
    if found:
        raise ExpressionError("; ".join(found))
    out = []
    for part in parts:
        if isinstance(part, str):
            out.append(part)
        elif part.namespace == "timestamp":
            out.append(format_timestamp(part.value, when))
        elif part.namespace == "firehose" and part.value == "random-string":
            out.append(random_string())
        elif part.namespace == "firehose" and part.value == "error-output-type" and error_output_type:
            out.append(error_output_type)
        else:
            raise ExpressionError(f"cannot evaluate !{{{part.namespace}:{part.value}}} here")
    return "".join(out)


def effective_prefix(prefix: str | None) -> str:
    """Prefix as Firehose uses it: without a timestamp expression it gets ``!{timestamp:yyyy/MM/dd/HH/}``."""
    prefix = prefix or ""
    return prefix if has_timestamp(prefix) else prefix + DEFAULT_TIMESTAMP_SUFFIX


def effective_error_prefix(error_prefix: str | None, prefix: str | None) -> str:
    """ErrorOutputPrefix as used; when null: ``<Prefix>!{firehose:error-output-type}/<default time>``."""
    if error_prefix:
        return error_prefix
    return (prefix or "") + ERROR_OUTPUT_TYPE + "/" + DEFAULT_TIMESTAMP_SUFFIX


def object_suffix(
    stream_name: str, version: str | int, when: datetime, compression: str = "UNCOMPRESSED"
) -> str:
    """``<name>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid><extension>`` (UTC)."""
    stamp = when.astimezone(UTC).strftime("%Y-%m-%d-%H-%M-%S")
    return f"{stream_name}-{version}-{stamp}-{uuid.uuid4()}{FILE_EXTENSIONS.get(compression, '')}"


def object_key(
    prefix: str | None,
    *,
    stream_name: str,
    version: str | int,
    when: datetime,
    compression: str = "UNCOMPRESSED",
) -> str:
    """Key of a delivered object: evaluated (effective) Prefix + suffix."""
    return evaluate(effective_prefix(prefix), when) + object_suffix(stream_name, version, when, compression)


def error_object_key(
    error_prefix: str | None,
    prefix: str | None,
    *,
    error_output_type: str,
    stream_name: str,
    version: str | int,
    when: datetime,
) -> str:
    """Key of an error object: evaluated ErrorOutputPrefix + suffix (error objects are not compressed)."""
    evaluated = evaluate(
        effective_error_prefix(error_prefix, prefix), when, error_output_type=error_output_type
    )
    return evaluated + object_suffix(stream_name, version, when)
