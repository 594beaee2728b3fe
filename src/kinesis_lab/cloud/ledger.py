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

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from botocore.exceptions import ClientError

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
_STREAM_GONE = {"ResourceNotFoundException"}
_BUCKET_GONE = {"NoSuchBucket", "404"}
_READ_RETRY = {"ProvisionedThroughputExceededException", "LimitExceededException", "ThrottlingException"}


@dataclass
class HopData:
    """What one hop holds: event id -> copies, plus records/lines it holds without a usable event id."""

    name: str
    ids: Counter | None = None  # None: the hop was not checked
    no_id: int = 0
    note: str = ""

    @property
    def checked(self) -> bool:
        return self.ids is not None


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


# --- reading the hops -------------------------------------------------------------------------------
def _event_id(data: bytes | str) -> str | None:
    try:
        value = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    event_id = value.get("event_id") if isinstance(value, dict) else None
    return event_id if isinstance(event_id, str) and event_id else None


def _code(exc: ClientError) -> str:
    return exc.response.get("Error", {}).get("Code", "")


def _call(fn, *, tries: int = 8, **kwargs):
    """A read call, retried with backoff while throttled (GetRecords: 5 calls/s per shard on AWS)."""
    for attempt in range(tries):
        try:
            return fn(**kwargs)
        except ClientError as exc:
            if _code(exc) not in _READ_RETRY or attempt == tries - 1:
                raise
            time.sleep(min(2.0, 0.2 * 2**attempt))
    raise AssertionError("unreachable")


def read_stream(kinesis, stream_name: str) -> HopData:
    """Every record of every shard of the stream (by StreamName, from TRIM_HORIZON), counted by event id.
    A stream that does not exist gives an unchecked hop with a note."""
    hop = HopData("kinesis", Counter())
    try:
        shards, kwargs = [], {"StreamName": stream_name}
        while True:
            page = _call(kinesis.list_shards, **kwargs)
            shards += [s["ShardId"] for s in page.get("Shards", [])]
            if not page.get("NextToken"):
                break
            kwargs = {"NextToken": page["NextToken"]}
        for shard_id in shards:
            iterator = _call(
                kinesis.get_shard_iterator,
                StreamName=stream_name,
                ShardId=shard_id,
                ShardIteratorType="TRIM_HORIZON",
            )["ShardIterator"]
            while iterator:
                page = _call(kinesis.get_records, ShardIterator=iterator, Limit=10000)
                for record in page.get("Records", []):
                    event_id = _event_id(record["Data"])
                    if event_id is None:
                        hop.no_id += 1
                    else:
                        hop.ids[event_id] += 1
                iterator = page.get("NextShardIterator")
                # an empty page at the tip of an open shard: the end (AWS may return empty pages
                # while still behind the tip; MillisBehindLatest says so)
                if not page.get("Records") and not page.get("MillisBehindLatest"):
                    break
    except ClientError as exc:
        if _code(exc) not in _STREAM_GONE:
            raise
        return HopData("kinesis", None, note=f"stream {stream_name!r} does not exist (deleted by teardown?)")
    return hop


def stream_retention_hours(kinesis, stream_name: str) -> int | None:
    try:
        summary = kinesis.describe_stream_summary(StreamName=stream_name)["StreamDescriptionSummary"]
    except ClientError:
        return None
    return summary.get("RetentionPeriodHours")


def read_s3(s3, bucket: str, prefix: str) -> HopData:
    """The event ids of every JSON line under the static part of ``prefix`` (see landing.read_landing)."""
    from kinesis_lab.cloud.landing import read_landing
    from kinesis_lab.cloud.prefixes import static_prefix

    try:
        landing = read_landing(s3, bucket, static_prefix(prefix))
    except ClientError as exc:
        if _code(exc) not in _BUCKET_GONE:
            raise
        return HopData("s3", None, note=f"bucket {bucket!r} does not exist (deleted by teardown?)")
    return HopData(
        "s3",
        Counter(landing.event_ids),
        no_id=landing.unparsed_lines,
        note=f"{len(landing.objects)} objects under s3://{bucket}/{static_prefix(prefix)}",
    )


def read_tables(build_dir: str | Path) -> tuple[HopData, HopData, dict, dict]:
    """(bronze hop, silver hop, event id -> rows in silver_events, event id -> [rules of each quarantine
    row]) from the local pipeline's tables; unchecked hops if the pipeline has not made them yet."""
    from kinesis_lab.local import pipeline as lp

    paths = lp.table_paths(build_dir)
    bronze = HopData("bronze", None, note="no bronze_events table yet: run the pipeline (notebook 07)")
    silver = HopData("silver", None, note="no silver tables yet: run the pipeline (notebook 07/08)")
    in_silver: Counter = Counter()
    quarantined: dict[str, list[tuple[str, ...]]] = {}
    if lp.BRONZE_TABLE in paths:
        frame = lp.read_table(build_dir, lp.BRONZE_TABLE, ["event_id", "_parse_ok"])
        parsed = frame["_parse_ok"].fillna(False).astype(bool) & frame["event_id"].notna()
        bronze = HopData("bronze", Counter(frame.loc[parsed, "event_id"]), no_id=int((~parsed).sum()))
    if lp.SILVER_TABLE in paths and lp.QUARANTINE_TABLE in paths:
        ids = lp.read_table(build_dir, lp.SILVER_TABLE, ["event_id"])["event_id"]
        in_silver.update(ids.dropna())
        no_id = int(ids.isna().sum())
        quarantine = lp.read_table(build_dir, lp.QUARANTINE_TABLE, ["event_id", "broken_rules"])
        for event_id, rules in zip(quarantine["event_id"], quarantine["broken_rules"], strict=True):
            if event_id is None or event_id != event_id:  # None or NaN
                no_id += 1
                continue
            quarantined.setdefault(event_id, []).append(tuple(rules) if rules is not None else ())
        total = Counter(in_silver)
        total.update({k: len(v) for k, v in quarantined.items()})
        silver = HopData("silver", total, no_id=no_id)
    return bronze, silver, dict(in_silver), quarantined


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
    build_dir: str | Path | None = None,
) -> Ledger:
    """The ledger of ``csv_path``: every data line's event id and fate at each hop.

    ``kinesis`` + ``stream_name``: read the stream (skipped if None or the stream is gone); ``s3`` +
    ``bucket`` + ``prefix`` (the Firehose prefix, expressions allowed): the landing objects; ``build_dir``:
    the local pipeline's tables (bronze, silver, quarantine). Raises ``producer.HeaderError`` if the CSV
    does not have the course's columns."""
    source_file, sha, lines = csv_lines(csv_path)
    hops: dict[str, HopData] = {}
    if kinesis is not None and stream_name:
        hops["kinesis"] = read_stream(kinesis, stream_name)
    else:
        hops["kinesis"] = HopData("kinesis", None, note="no Kinesis client given")
    if s3 is not None and bucket and prefix is not None:
        hops["s3"] = read_s3(s3, bucket, prefix)
    else:
        hops["s3"] = HopData("s3", None, note="no S3 client given")
    in_silver: dict = {}
    quarantined: dict = {}
    if build_dir is not None:
        hops["bronze"], hops["silver"], in_silver, quarantined = read_tables(build_dir)
    else:
        hops["bronze"] = HopData("bronze", None, note="no build folder given")
        hops["silver"] = HopData("silver", None, note="no build folder given")
    ledger = assemble(source_file, sha, lines, hops, in_silver, quarantined)
    if any("trimmed" in n for n in ledger.notes) and kinesis is not None:
        hours = stream_retention_hours(kinesis, stream_name)
        if hours:
            ledger.notes.append(f"the stream keeps records for {hours} h")
    return ledger


# --- `kinesis-lab reconcile` -------------------------------------------------------------------------
def run_reconcile(
    *,
    target: str | None = None,
    dataset: str | None = None,
    as_json: bool = False,
    write_summary: bool = True,
    out=print,
) -> int:
    """``kinesis-lab reconcile``: build the ledger of the configured lab, print it, add its figures to
    build/run-summary.json. 0: every line accounted for; 1: a line is missing or duplicated in silver;
    2: the ledger cannot be built (bad dataset, nothing to check)."""
    import sys

    import boto3

    from kinesis_lab.cloud.config import load_config
    from kinesis_lab.cloud.dataset import DatasetError
    from kinesis_lab.cloud.records import HeaderError
    from kinesis_lab.cloud.summary import DatasetMismatch, dataset_of_run, update_summary
    from kinesis_lab.local import stack, targets

    cfg = load_config(target=target)

    def fail(message: str) -> int:
        print(f"kinesis-lab: error: {message}", file=sys.stderr)
        return 2

    try:
        csv_path = dataset_of_run(cfg.build_dir, dataset)  # default: the CSV notebook 04 sent
    except (DatasetError, DatasetMismatch) as exc:
        return fail(str(exc))
    kinesis = s3 = bucket = None
    try:
        # reading creates nothing and costs next to nothing: no cost opt-in needed (as for teardown)
        session = targets.connect(cfg, start_stack=False, confirm_aws_costs=True)
    except stack.StackError:
        session = None
    if session is not None:
        kinesis = boto3.client("kinesis", region_name=cfg.region)
        s3 = boto3.client("s3", region_name=cfg.region)
        bucket = session.bucket
    try:
        ledger = build_ledger(
            csv_path,
            kinesis=kinesis,
            stream_name=cfg.stream_name,
            s3=s3,
            bucket=bucket,
            prefix=cfg.s3_prefix,
            build_dir=cfg.build_dir,
        )
    except (HeaderError, FileNotFoundError) as exc:
        return fail(str(exc))
    if session is None:
        ledger.notes.insert(
            0,
            "the local stack is not running: Kinesis and S3 not checked "
            "(start it with `kinesis-lab up` to check them)",
        )
    if not ledger.checked_hops():
        return fail(
            "nothing to check: no stream, no bucket and no pipeline tables "
            "(run the series first, or start the local stack)"
        )
    figures = ledger.summary_figures()
    if write_summary:
        update_summary(cfg.build_dir, **figures)
    if as_json:
        out(json.dumps({**figures, "fates": dict(ledger.fates()), "notes": ledger.notes}, indent=2))
    else:
        out(ledger.table())
    return 0 if ledger.ok else 1
