"""The ledger of a run: every line of the CSV, its ``event_id`` and its fate at each hop.

Hops, in order: the CSV itself, the Kinesis stream (every shard read from TRIM_HORIZON), the S3 landing
prefix (what Firehose wrote), the bronze table, and silver (``silver_events`` or ``silver_quarantine``).
The producer's event ids are deterministic (a row's content and its occurrence among identical rows), so
they are recomputed from the CSV here: nothing from the producing run is needed.

A line ends in silver, in quarantine (with the rules it broke), or is **missing**: absent from the
last hop that was checked, and then "missing at" the first hop from which it is absent for good. A
line is **duplicated** when silver and quarantine hold it more than once together (copies in Kinesis,
S3 or bronze are expected after retries: at-least-once delivery; silver deduplicates on event_id).

A hop whose resource is gone (the stream or bucket after teardown, tables before the first pipeline
run) is skipped with a note, not counted as a loss. A line absent from Kinesis but present later was
trimmed from the stream (older than its retention period), not lost.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from kinesis_lab.cloud.content import ContentIds, recognised_line
from kinesis_lab.cloud.hops import (
    HopData,
    TableReader,
    read_s3,
    read_stream,
    read_tables,
    stream_retention_hours,
)

HOPS = ("csv", "kinesis", "s3", "bronze", "silver")
HOP_TITLES = {
    "csv": "CSV file",
    "kinesis": "Kinesis stream",
    "s3": "S3 landing",
    "bronze": "bronze_events",
    "silver": "silver + quarantine",
}
BLANK = "blank line (nothing to send)"
CONTINUATION = "continuation"  # a further line of a record whose quoted field spans lines
CONTINUED = "part of the record above (a quoted field spans lines)"
NOT_SENT = ("blank", CONTINUATION)  # lines with no record of their own


@dataclass
class LineFate:
    line: int
    event_id: str
    kind: str  # "row", "malformed", "oversize" (what the producer sent), "blank" or "continuation"
    # hop -> copies there (None: hop not checked); "silver" counts silver + quarantine
    counts: dict[str, int | None]
    in_silver: int = 0
    in_quarantine: int = 0
    rules: tuple[str, ...] = ()
    missing_at: str | None = None

    @property
    def fate(self) -> str:
        if self.kind == "blank":
            return BLANK
        if self.kind == CONTINUATION:
            return CONTINUED
        if self.missing_at:
            return f"missing at {self.missing_at}"
        if self.in_silver and self.in_quarantine:
            return "silver and quarantine"
        if self.in_silver:
            return "silver"
        if self.in_quarantine:
            return f"quarantine ({', '.join(self.rules)})" if self.rules else "quarantine"
        last = [hop for hop in HOPS if self.counts.get(hop)][-1]  # the CSV at least
        return f"in {last} (later hops not checked)"

    @property
    def duplicated(self) -> bool:
        return self.in_silver + self.in_quarantine > 1


@dataclass
class Ledger:
    source_file: str
    file_sha256: str
    lines: list[LineFate]
    hops: dict[str, HopData]
    notes: list[str] = field(default_factory=list)

    # --- the figures -------------------------------------------------------------------------------
    @property
    def sent(self) -> list[LineFate]:
        """Lines the producer sends a record for (every line but blank and continuation ones)."""
        return [f for f in self.lines if f.kind not in NOT_SENT]

    @property
    def missing(self) -> list[LineFate]:
        return [f for f in self.lines if f.missing_at]

    @property
    def duplicated(self) -> list[LineFate]:
        return [f for f in self.lines if f.duplicated]

    @property
    def ok(self) -> bool:
        return not self.missing and not self.duplicated

    def checked_hops(self) -> list[str]:
        """The hops after the CSV that were checked."""
        return [h for h in HOPS[1:] if self.hops[h].checked]

    def hop_rows(self) -> list[dict]:
        """One row per hop: lines present, lines first missing there, extra copies, other records."""
        rows = []
        sent = self.sent
        ours = {f.event_id for f in sent}
        for hop in HOPS:
            data = self.hops[hop]
            if not data.checked:
                rows.append(
                    {
                        "hop": hop,
                        "checked": False,
                        "lines": None,
                        "missing_here": None,
                        "extra_copies": None,
                        "other_records": None,
                        "note": data.note,
                    }
                )
                continue
            present = [f for f in sent if f.counts[hop]]
            rows.append(
                {
                    "hop": hop,
                    "checked": True,
                    "lines": len(present),
                    "missing_here": sum(1 for f in sent if f.missing_at == hop),
                    "extra_copies": sum(f.counts[hop] - 1 for f in present),
                    "other_records": sum(n for i, n in data.ids.items() if i not in ours) + data.no_id,
                    "note": data.note,
                }
            )
        return rows

    def fates(self) -> Counter:
        """How many lines per fate (quarantine split by its rules)."""
        return Counter(f.fate for f in self.lines)

    def hop_counts(self) -> dict[str, int | None]:
        """Lines present per hop (None: not checked); silver and quarantine apart."""
        sent = self.sent
        counts: dict[str, int | None] = {"csv_lines": len(self.lines), "csv_records": len(sent)}
        for hop in HOPS[1:4]:
            counts[hop] = sum(1 for f in sent if f.counts[hop]) if self.hops[hop].checked else None
        silver_checked = self.hops["silver"].checked
        counts["silver"] = sum(1 for f in sent if f.in_silver) if silver_checked else None
        counts["quarantine"] = sum(1 for f in sent if f.in_quarantine) if silver_checked else None
        return counts

    def summary_figures(self) -> dict:
        """What goes into build/run-summary.json (``summary.update_summary(build_dir, **figures)``)."""
        missing_at = Counter(f.missing_at for f in self.missing)
        return {
            "ledger_missing": len(self.missing),
            "ledger_duplicated": len(self.duplicated),
            "ledger_hops": self.hop_counts(),
            "ledger_missing_at": {hop: missing_at[hop] for hop in HOPS if missing_at[hop]},
            "ledger_unchecked_hops": [h for h in HOPS if not self.hops[h].checked],
        }

    # --- showing it -------------------------------------------------------------------------------
    def table(self) -> str:
        """The counts per hop and the fates, as text."""
        out = [
            f"ledger of {self.source_file} ({len(self.lines)} data lines, {len(self.sent)} sent; "
            f"sha256 {self.file_sha256[:12]})"
        ]
        header = f"{'hop':22} {'lines':>7} {'missing':>8} {'extra':>7} {'other':>7}"
        out += [header, "-" * len(header)]
        for row in self.hop_rows():
            title = HOP_TITLES[row["hop"]]
            if not row["checked"]:
                out.append(f"{title:22} {'not checked':>31}  {row['note']}".rstrip())
                continue
            out.append(
                f"{title:22} {row['lines']:>7} {row['missing_here']:>8} {row['extra_copies']:>7} "
                f"{row['other_records']:>7}" + (f"  {row['note']}" if row["note"] else "")
            )
        out.append(
            "(missing: lines first absent at this hop; extra: copies beyond one; "
            "other: records of other files or without an event id)"
        )
        out.append(
            "fates: "
            + ", ".join(
                f"{fate} {n}" for fate, n in sorted(self.fates().items(), key=lambda kv: (-kv[1], kv[0]))
            )
        )
        shown = tuple(f"{HOP_TITLES[h]} not checked" for h in HOPS)  # already on the hop's row
        out += [f"note: {note}" for note in self.notes if not note.startswith(shown)]
        if self.missing:
            first = ", ".join(f"line {f.line} ({f.fate})" for f in self.missing[:10])
            out.append(
                f"MISSING: {len(self.missing)} line(s): {first}" + (" ..." if len(self.missing) > 10 else "")
            )
        if self.duplicated:
            first = ", ".join(f"line {f.line}" for f in self.duplicated[:10])
            out.append(f"DUPLICATED in silver: {len(self.duplicated)} line(s): {first}")
        if self.ok:
            out.append("every line is accounted for: none missing, none duplicated in silver")
        return "\n".join(out)

    def frame(self):
        """One row per CSV line (pandas DataFrame): line, event_id, kind, copies per hop, fate."""
        import pandas as pd

        return pd.DataFrame(
            [
                {
                    "line": f.line,
                    "event_id": f.event_id,
                    "kind": f.kind,
                    **{hop: f.counts.get(hop) for hop in HOPS[1:4]},
                    "silver": f.in_silver,
                    "quarantine": f.in_quarantine,
                    "fate": f.fate,
                }
                for f in self.lines
            ]
        )


# --- building it -------------------------------------------------------------------------------------
def csv_lines(csv_path: str | Path) -> tuple[str, str, list[tuple[int, str, str]]]:
    """(file name, sha256, [(line, event_id, kind)] for every data line): a record's first line carries its
    event id; the other lines of a record whose quoted field spans lines are "continuation" lines with the
    same id; blank lines get a placeholder id ``blank-<line>`` (nothing is sent for them)."""
    from kinesis_lab.cloud.records import RecordReader

    reader = RecordReader(csv_path)  # HeaderError for a header without the course's columns
    lines: list[tuple[int, str, str]] = []
    expected = 2
    for record in reader:
        lines += [(n, f"blank-{n}", "blank") for n in range(expected, record.line)]
        lines.append((record.line, record.event_id, record.kind))
        last = record.last_line or record.line
        lines += [(n, record.event_id, CONTINUATION) for n in range(record.line + 1, last + 1)]
        expected = last + 1
    lines += [(n, f"blank-{n}", "blank") for n in range(expected, reader.total_lines + 1)]
    return reader.source_file, reader.file_sha256, lines


def assemble(
    source_file: str,
    file_sha256: str,
    lines: Iterable[tuple[int, str, str]],
    hops: dict[str, HopData],
    in_silver: dict[str, int] | None = None,
    quarantined: dict[str, list[tuple[str, ...]]] | None = None,
    notes: list[str] | None = None,
) -> Ledger:
    """The ledger from what each hop holds (pure: no I/O). ``hops`` maps kinesis/s3/bronze/silver to
    HopData (a missing key: not checked); ``in_silver``/``quarantined`` split the silver hop."""
    in_silver, quarantined = in_silver or {}, quarantined or {}
    hops = {"csv": HopData("csv", Counter(), note=""), **{h: HopData(h) for h in HOPS[1:]}, **hops}
    checked = [h for h in HOPS[1:] if hops[h].checked]
    fates, trimmed = [], 0
    for line, event_id, kind in lines:
        sent = kind not in NOT_SENT
        hops["csv"].ids[event_id] += sent
        counts: dict[str, int | None] = {"csv": int(sent)}
        for hop in HOPS[1:]:
            counts[hop] = hops[hop].ids.get(event_id, 0) if hops[hop].checked else None
        rules = tuple(sorted({r for row in quarantined.get(event_id, []) for r in row}))
        fate = LineFate(
            line,
            event_id,
            kind,
            counts,
            in_silver.get(event_id, 0) if sent else 0,
            len(quarantined.get(event_id, [])) if sent else 0,
            rules if sent else (),
        )
        if sent and checked:
            present = [h for h in checked if counts[h]]
            if not counts[checked[-1]]:
                # where it dropped out for good: the first checked hop after the last one holding it
                after = checked.index(present[-1]) + 1 if present else 0
                fate.missing_at = checked[after]
            if "kinesis" in checked and not counts["kinesis"] and present:
                trimmed += 1
        fates.append(fate)
    notes = list(notes or [])
    if trimmed:
        notes.append(
            f"{trimmed} line(s) are no longer in the Kinesis stream but reached a later hop: trimmed "
            "from the stream (older than its retention period), not lost"
        )
    for hop in HOPS[1:]:
        if not hops[hop].checked:
            notes.append(f"{HOP_TITLES[hop]} not checked" + (f": {hops[hop].note}" if hops[hop].note else ""))
    return Ledger(source_file, file_sha256, fates, hops, notes)


def build_ledger(
    csv_path: str | Path,
    *,
    kinesis=None,
    stream_name: str | None = None,
    s3=None,
    bucket: str | None = None,
    prefix: str | None = None,
    tables: TableReader | None = None,
) -> Ledger:
    """The ledger of ``csv_path``: every data line's event id and fate at each hop.

    ``kinesis`` + ``stream_name``: read the stream (skipped if None or the stream is gone); ``s3`` +
    ``bucket`` + ``prefix`` (the Firehose prefix, expressions allowed): the landing objects; ``tables``:
    a reader of the pipeline's tables (bronze, silver, quarantine): ``read(name, columns)``. Raises
    ``records.HeaderError`` if the CSV does not have the course's columns."""
    source_file, sha, lines = csv_lines(csv_path)
    content = ContentIds(csv_path)  # rows another producer sent without event_id: recognised by content
    hops: dict[str, HopData] = {}
    if kinesis is not None and stream_name:
        hops["kinesis"] = read_stream(kinesis, stream_name, content)
    else:
        hops["kinesis"] = HopData("kinesis", None, note="no Kinesis client given")
    if s3 is not None and bucket and prefix is not None:
        hops["s3"] = read_s3(s3, bucket, prefix, content)
    else:
        hops["s3"] = HopData("s3", None, note="no S3 client given")
    in_silver: dict = {}
    quarantined: dict = {}
    if tables is not None:
        hops["bronze"], hops["silver"], in_silver, quarantined = read_tables(tables)
    else:
        hops["bronze"] = HopData("bronze", None, note="no pipeline tables given")
        hops["silver"] = HopData("silver", None, note="no pipeline tables given")
    notes = [recognised_line(hops[h].by_content, f"in the {HOP_TITLES[h]}")
             for h in ("kinesis", "s3") if hops[h].by_content]
    ledger = assemble(source_file, sha, lines, hops, in_silver, quarantined, notes)
    if any("trimmed" in n for n in ledger.notes) and kinesis is not None:
        hours = stream_retention_hours(kinesis, stream_name)
        if hours:
            ledger.notes.append(f"the stream keeps records for {hours} h")
    return ledger
