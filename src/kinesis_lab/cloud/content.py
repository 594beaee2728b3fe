"""Recognising records that carry no ``event_id`` by their content.

The original course's producer sends ``json.dumps(row) + "\\n"`` (pandas-typed values: ``2010``, ``12.5``, ``NaN``)
and no event id. The lab's ids are content-based (``records.event_id_for``: a row's 8 fields + its occurrence
among identical rows), so such a record is matched to the CSV row with the same values: each value compared
as a number when it is one (``"12.50"`` in the CSV = ``12.5`` sent), as text otherwise, empty and pandas'
missing values (``NaN``, ``NA``, ...) as empty. Identical rows share their copies in occurrence order.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from kinesis_lab.cloud.dataset import COLUMNS

MISSING_TEXTS = {"", "na", "n/a", "nan", "null", "none", "<na>"}  # what pandas reads as a missing value


def _value(value) -> str:
    if value is None or isinstance(value, bool):
        return "" if value is None else f"s:{value}"
    if isinstance(value, int | float):
        number = float(value)
    else:
        text = str(value).strip()
        if text.lower() in MISSING_TEXTS:
            return ""
        try:
            number = float(text)
        except ValueError:
            return f"s:{text}"
    return "" if math.isnan(number) else f"n:{number!r}"


def content_key(values: Iterable) -> str:
    """The comparable content of a row's values in the course's column order."""
    return json.dumps([_value(v) for v in values], ensure_ascii=False)


def parse_record(data: bytes | str) -> tuple[str | None, str | None]:
    """(event id, None) for a lab record; (None, content key) for a row without an event id that has the
    course's columns (another producer's); (None, None) for anything else."""
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None, None
    if not isinstance(value, dict):
        return None, None
    event_id = value.get("event_id")
    if isinstance(event_id, str) and event_id:
        return event_id, None
    if "event_id" not in value and all(c in value for c in COLUMNS):
        return None, content_key(value[c] for c in COLUMNS)
    return None, None


class ContentIds:
    """Content key -> the event ids of the CSV rows with that content, in occurrence order (read from the
    CSV on first use: only when a record without an id turns up)."""

    def __init__(self, csv_path: str | Path):
        self.csv_path = Path(csv_path)
        self._index: dict[str, list[str]] | None = None

    def index(self) -> dict[str, list[str]]:
        if self._index is None:
            from kinesis_lab.cloud.records import iter_records

            self._index = {}
            for record in iter_records(self.csv_path):
                if record.kind == "row":
                    row = json.loads(record.data)
                    self._index.setdefault(content_key(row[c] for c in COLUMNS), []).append(record.event_id)
        return self._index

    def attribute(self, contents: Counter) -> tuple[Counter, int]:
        """(event id -> copies, copies matching no row) for ``contents`` (content key -> copies)."""
        ids: Counter = Counter()
        unknown = 0
        for key, copies in contents.items():
            owners = self.index().get(key) if copies else None
            if not owners:
                unknown += copies
                continue
            for n in range(copies):  # identical rows: one copy each, in order, before any gets a second
                ids[owners[n % len(owners)]] += 1
        return ids, unknown


def recognised_line(count: int, where: str) -> str:
    """The line that says records were matched by content."""
    return (f"{count} record(s) {where} carry no event_id (sent by another producer, such as the original "
            "course's): recognised by their content as the CSV's rows and counted as them")
