"""9. make test's class archive: the time to make it, and a pipeline server's first and second run on the shipped
sample with and without it (wall time and the Spark server's CPU)."""

from __future__ import annotations

import os
import shutil
import statistics
import time

from common import BENCH, load, say, two_pipeline_runs


def bench_class_archive(ctx: dict) -> dict:
    from kinesis_lab.cloud.dataset import SAMPLE_PATH
    from kinesis_lab.cloud.records import iter_records
    from kinesis_lab.local.pipeline.class_archive import ARCHIVE_ENV, make_class_archive

    folder = BENCH / "class-archive"
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    archive = make_class_archive(folder, echo=None)
    made_in = round(time.monotonic() - started, 1)
    say(f"  made {archive.name} ({archive.stat().st_size / 2**20:.0f} MiB) in {made_in} s  ({load()})")
    lines = [r.data for r in iter_records(SAMPLE_PATH)]

    def one(label: str, n: int) -> dict:
        build = BENCH / f"class-archive-{label}-{n}"
        shutil.rmtree(build, ignore_errors=True)
        saved = os.environ.pop(ARCHIVE_ENV, None)
        if label == "archive":
            os.environ[ARCHIVE_ENV] = str(archive)
        try:
            out = two_pipeline_runs(build, b"".join(lines[:-40]), b"".join(lines[-40:]))
        finally:
            os.environ.pop(ARCHIVE_ENV, None)
            if saved is not None:
                os.environ[ARCHIVE_ENV] = saved
            shutil.rmtree(build, ignore_errors=True)
        say(f"    {label:10} round {n + 1}: first run {out['first']['wall']:5.1f} s wall, {out['first']['cpu']:5.1f} s "
            f"CPU (server start included); second {out['second']['wall']:5.1f} s, {out['second']['cpu']:5.1f} s CPU")
        return out

    rounds = 1 if ctx["quick"] else 3
    runs: dict[str, list[dict]] = {"none": [], "archive": []}
    for n in range(rounds):
        for label in ("none", "archive"):
            runs[label].append(one(label, n))
    figures = {label: {run: {what: round(statistics.median(r[run][what] for r in runs[label]), 1)
                             for what in ("wall", "cpu")} for run in ("first", "second")} for label in runs}
    saved_cpu = figures["none"]["first"]["cpu"] - figures["archive"]["first"]["cpu"]
    measured = (f"archive made in {made_in} s; a server's first run {figures['archive']['first']['cpu']} s of CPU with "
                f"it, {figures['none']['first']['cpu']} s without ({saved_cpu:.1f} s saved per server start), a "
                f"second run {figures['archive']['second']['cpu']} / {figures['none']['second']['cpu']} s")
    say(f"  {measured}")
    shutil.rmtree(folder, ignore_errors=True)
    return {"figure": "make test's class archive: its cost, and what it saves a Spark server", "measured": measured,
            "target": "report", "passed": None, "correct": True,
            "figures": {"made_in_s": made_in, "medians": figures, "runs": runs}}
