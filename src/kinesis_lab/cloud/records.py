"""The record format: one JSON record (plus ``\\n``) per line of a CSV file, read as a stream.

- the file is read in binary, line by line: memory stays flat whatever its size;
- every value is kept as the raw CSV text; typing is the silver layer's job;
- ``event_id`` = uuid5 over (the row's content, its occurrence among identical rows before it): reading
  the same rows again gives the same ids, so downstream drops repeats; appending or fixing a row
  changes only that row's id; identical rows (the dataset has them) keep distinct ids. It is also the
  partition key (spreads over shards);
- a line that cannot be parsed is not skipped: it becomes a marker record (``"malformed": true``,
  ``error``, ``raw_line``) that ends in quarantine downstream; a record over 1 MiB (the PutRecords limit
  per record) becomes a marker too (``error`` "record over 1 MiB ...") so nothing is lost.

CSV as RFC 4180 has it: a quoted field may hold commas, quotes ("") and line breaks, so one record may
span several physical lines (its ``source_line`` is the first). A quote that is still open after 1 MiB
or at the end of the file makes its first line a malformed marker, and reading goes on with the next
line: the rest of the file is read as if that line were not there.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kinesis_lab.cloud.dataset import COLUMNS, header_problems

MAX_RECORD_BYTES = 1024 * 1024  # data + partition key: the PutRecords limit per record
RAW_LINE_KEEP_CHARS = 4096  # how much of an oversize line its marker keeps
READ_CHUNK = 1024 * 1024
# fixed namespace: event ids stay the same across machines and versions
EVENT_NAMESPACE = uuid.UUID("7ba8f7ad-42a5-423b-bcf3-506a23e91beb")


class HeaderError(ValueError):
    """The CSV header does not have the course's columns; raised before anything is sent."""


@dataclass(slots=True)
class Record:
    """One Kinesis record: ``kind`` is "row" (a well-formed line), "malformed" or "oversize"."""

    data: bytes
    partition_key: str
    event_id: str
    line: int
    kind: str = "row"
    last_line: int = 0  # the record's last physical line when a quoted field spans lines; 0: ``line``

    @property
    def malformed(self) -> bool:
        return self.kind != "row"

    @property
    def size(self) -> int:
        """What counts against the PutRecords limits: data + partition key bytes."""
        return len(self.data) + len(self.partition_key.encode("utf-8"))


def _dump(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


_json_text = json.encoder.encode_basestring  # str -> JSON string literal, non-ASCII kept (C speed)


def _utc_text(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clock():
    """``now()`` giving the UTC ISO-8601 time, formatted at most once per millisecond."""
    last = [-1, ""]

    def now() -> str:
        ms = int(time.time() * 1000)
        if ms != last[0]:
            last[0], last[1] = ms, _utc_text(datetime.fromtimestamp(ms / 1000, UTC))
        return last[1]

    return now


def scan_file(path: str | Path) -> tuple[str, int]:
    """(sha256 hex of the bytes, number of physical lines), reading the file once in chunks."""
    digest, lines, last = hashlib.sha256(), 0, b""
    with Path(path).open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
            lines += chunk.count(b"\n")
            last = chunk
    if last and not last.endswith(b"\n"):
        lines += 1
    return digest.hexdigest(), lines


def event_id_for(content: str, occurrence: int = 1) -> str:
    """The id of a record: its content (``record_content``) and which of the identical records before it
    in the file it is (1: the first). Nothing else in the file changes it."""
    return str(uuid.uuid5(EVENT_NAMESPACE, f"{occurrence}:{content}"))


def record_content(fields: list[str] | None = None, raw: str | None = None) -> str:
    """What an id is made of: a row's 8 fields in the course's column order, or a bad line's text."""
    return json.dumps(fields, ensure_ascii=False) if fields is not None else f"raw:{raw}"


class _Occurrences:
    """Counts identical records as they are read, by a 64-bit hash of their content (memory: one small int
    per distinct record). Two different records sharing a hash would only number the second "2": its id,
    made from its own content, stays distinct."""

    def __init__(self):
        self._seen: dict[int, int] = {}

    def next(self, content: str) -> int:
        key = hash(content)  # the same within one pass over the file, which is all that is counted
        occurrence = self._seen.get(key, 0) + 1
        self._seen[key] = occurrence
        return occurrence


OPEN_QUOTE = "unexpected end of data"  # what the csv module says about a quote still open


def _read_quoted_record(text: str, fh) -> tuple[list[str] | None, str, str, int]:
    """Parse a line that has quotes. A quoted field still open at the end of the line goes on on the next
    physical lines (RFC 4180): they are joined with "\\n" until the quote closes. Returns (fields, error,
    the record's text, lines joined). Lines are joined only into a record of the course's 8 fields: a quote
    still open after 1 MiB or at the end of the file, or closed into anything else, is the error "unclosed
    quote", with ``fh`` back right after the first line, so the next lines are read anew."""
    try:
        return next(csv.reader([text], strict=True)), "", text, 0
    except csv.Error as exc:
        if OPEN_QUOTE not in str(exc):
            return None, f"CSV syntax: {exc}", text, 0
    after_first, parts, size = fh.tell(), [text], len(text)
    while (raw := fh.readline(MAX_RECORD_BYTES + 1)) and (size := size + len(raw)) <= MAX_RECORD_BYTES:
        try:
            parts.append(raw.rstrip(b"\r\n").decode("utf-8"))
        except UnicodeDecodeError:
            break
        joined = "\n".join(parts)
        try:
            fields = next(csv.reader([joined], strict=True))
        except csv.Error as exc:
            if OPEN_QUOTE not in str(exc):
                break
            continue
        if len(fields) != len(COLUMNS):  # not a record spanning lines: a stray quote met another one
            break
        return fields, "", joined, len(parts) - 1
    fh.seek(after_first)
    return None, "unclosed quote", text, 0  # not closed within 1 MiB, nor before the end of the file


class _Encoder:
    """Makes the records of one pass over a file: ids (content + occurrence, counted anew each pass), the
    rows' JSON (a template: the 8 columns in course order, then the metadata) and the marker records."""

    def __init__(self, source_file: str, columns: list[str], fixed_time: str | None):
        self.source_file = source_file
        self.now = (lambda: fixed_time) if fixed_time else _clock()
        self.order = None if tuple(columns) == COLUMNS else [columns.index(c) for c in COLUMNS]
        self._occurrences = _Occurrences()
        self._namespace = hashlib.sha1(EVENT_NAMESPACE.bytes)
        self._template = "{" + ",".join(
            [f'"{c}":%s' for c in COLUMNS]
            + ['"event_id":"%s"', '"source_file":' + _json_text(source_file).replace("%", "%%"),
               '"source_line":%d', '"produced_at":%s']
        ) + "}\n"

    def make_id(self, content: str) -> str:  # == event_id_for(content, occurrence), faster
        h = self._namespace.copy()
        h.update(f"{self._occurrences.next(content)}:{content}".encode())
        d = h.digest()
        x = f"{d[:6].hex()}{0x50 | (d[6] & 0x0F):02x}{d[7]:02x}{0x80 | (d[8] & 0x3F):02x}{d[9:16].hex()}"
        return f"{x[:8]}-{x[8:12]}-{x[12:16]}-{x[16:20]}-{x[20:]}"

    def marker(self, line: int, error: str, raw_line: str, kind: str = "malformed") -> Record:
        event_id = self.make_id(record_content(raw=raw_line))
        obj = {"event_id": event_id, "source_file": self.source_file, "source_line": line,
               "produced_at": self.now(), "malformed": True, "error": error, "raw_line": raw_line}
        data = _dump(obj)
        if len(data) + len(event_id) > MAX_RECORD_BYTES:  # a huge bad line: keep its start only
            obj["raw_line"] = raw_line[:RAW_LINE_KEEP_CHARS]
            obj["raw_line_truncated"] = True
            data = _dump(obj)
        return Record(data, event_id, event_id, line, kind)

    def row(self, fields: list[str], line: int, last_line: int, text: str) -> Record:
        """The record of a parsed line (``text``: its text, for a marker): a row, or a marker if the number
        of fields is wrong or the record is over 1 MiB."""
        ncols = len(COLUMNS)
        if len(fields) != ncols:
            kind = "too many" if len(fields) > ncols else "too few"
            return self.marker(line, f"{kind} fields ({len(fields)}, expected {ncols})", text)
        if self.order:
            fields = [fields[i] for i in self.order]
        encoded = list(map(_json_text, fields))
        event_id = self.make_id("[" + ", ".join(encoded) + "]")  # == record_content(fields)
        data = (self._template % (*encoded, event_id, line, _json_text(self.now()))).encode("utf-8")
        if len(data) + len(event_id) > MAX_RECORD_BYTES:
            return self.marker(line, f"record over 1 MiB ({len(data) + len(event_id)} bytes)",
                               text[:RAW_LINE_KEEP_CHARS], "oversize")
        return Record(data, event_id, event_id, line, last_line=last_line)


def _split_line(text: str, fh) -> tuple[list[str] | None, str, str, int]:
    """(fields, error, the record's text, lines joined): see ``_read_quoted_record``."""
    if '"' not in text and "\r" not in text:
        return text.split(","), "", text, 0  # no quoting on this line: same result as the csv module
    return _read_quoted_record(text, fh)


class RecordReader:
    """Iterates the records of one CSV file. Construction hashes the file and checks its header
    (``HeaderError``); iteration streams it. ``blank_lines`` counts lines skipped as empty."""

    def __init__(self, path: str | Path, *, produced_at: datetime | str | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"CSV file not found: {self.path}")
        self.source_file = self.path.name
        self.file_sha256, self.total_lines = scan_file(self.path)
        self.blank_lines = 0
        if isinstance(produced_at, datetime):
            produced_at = _utc_text(produced_at)
        self._fixed_time = produced_at
        self.columns: list[str] | None = None  # header names in file order; None: empty file
        with self.path.open("rb") as fh:
            header = fh.readline(MAX_RECORD_BYTES)
        self._header_bytes = len(header)
        if header:
            self.columns = self._parse_header(header)

    @property
    def data_lines(self) -> int:
        """Physical lines after the header."""
        return max(0, self.total_lines - 1)

    def _parse_header(self, raw: bytes) -> list[str]:
        if len(raw) == MAX_RECORD_BYTES and not raw.endswith(b"\n"):
            raise HeaderError(f"{self.source_file}: the first line is over 1 MiB: not a CSV header")
        try:
            text = raw.decode("utf-8-sig").rstrip("\r\n")  # utf-8-sig drops a byte order mark
            names = [f.strip() for f in next(csv.reader([text], strict=True), [])]
            problems = header_problems(names) if names else ["the header line is empty"]
        except UnicodeDecodeError:
            problems = ["the header line is not valid UTF-8"]
        except csv.Error as exc:
            problems = [f"the header line is not valid CSV ({exc})"]
        if problems:
            raise HeaderError(
                f"{self.source_file}: the header does not match the course's columns: {'; '.join(problems)}. "
                f"Expected (any order): {', '.join(COLUMNS)}"
            )
        return names

    def __iter__(self) -> Iterator[Record]:
        if self.columns is None:
            return
        encoder = _Encoder(self.source_file, self.columns, self._fixed_time)
        line = 1
        with self.path.open("rb") as fh:
            fh.seek(self._header_bytes)  # past the header, checked in __init__
            while raw := fh.readline(MAX_RECORD_BYTES + 1):
                line += 1
                if len(raw) > MAX_RECORD_BYTES:  # never hold more than ~1 MiB of one line
                    yield _oversize_line(raw, fh, line, encoder)
                    continue
                raw = raw.rstrip(b"\r\n")
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    error = f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1})"
                    yield encoder.marker(line, error, raw.decode("utf-8", "replace"))
                    continue
                if not text.strip():
                    self.blank_lines += 1
                    continue
                first_line = line
                fields, error, text, more = _split_line(text, fh)
                line += more  # a quoted field spanned lines: ``text`` is them joined by "\n"
                if error:
                    yield encoder.marker(first_line, error, text)
                else:
                    yield encoder.row(fields, first_line, line, text)


def _oversize_line(raw: bytes, fh, line: int, encoder: _Encoder) -> Record:
    """The marker of a line over 1 MiB: its start is kept, the rest is read on and only counted."""
    start = raw[:RAW_LINE_KEEP_CHARS].decode("utf-8", "replace")
    total = len(raw.rstrip(b"\r\n"))
    while not raw.endswith(b"\n") and (raw := fh.readline(READ_CHUNK)):
        total += len(raw.rstrip(b"\r\n"))
    return encoder.marker(line, f"record over 1 MiB (line of {total} bytes)", start, "oversize")


def iter_records(path: str | Path, *, produced_at: datetime | str | None = None) -> Iterator[Record]:
    """The records of a CSV file, in line order (see ``RecordReader``)."""
    return iter(RecordReader(path, produced_at=produced_at))
