"""8. The pipeline's overhead: a first and a second pipeline run on the shipped sample with the lab's Spark
settings vs Spark's defaults for them (wall time and the Spark server's CPU)."""

from __future__ import annotations

import shutil
import statistics
from pathlib import Path

from common import BENCH, load, say, two_pipeline_runs


def bench_pipeline_overhead(ctx: dict) -> dict:
    from kinesis_lab.cloud.dataset import SAMPLE_PATH
    from kinesis_lab.cloud.records import iter_records
    from kinesis_lab.local.pipeline.paths import lakehouse_dir
    from kinesis_lab.local.pipeline.runner import JAVA_OPTIONS

    lines = [r.data.decode().rstrip("\n") for r in iter_records(SAMPLE_PATH)]
    first, later = lines[:-40], lines[-40:]

    def defaults(build: Path) -> dict:
        """What the lab sets on top of Spark's defaults, put back (C1-only JIT kept: it is issue 7's)."""
        lakehouse = lakehouse_dir(build).resolve()
        return {"spark.sql.codegen.wholeStage": "true", "spark.sql.codegen.factoryMode": "FALLBACK",
                "spark.sql.adaptive.enabled": "true",
                "spark.driver.extraJavaOptions": f"-Dderby.system.home={lakehouse} -XX:TieredStopAtLevel=1"}

    def one(label: str, n: int) -> dict:
        build = BENCH / f"pipeline-{label}-{n}"
        shutil.rmtree(build, ignore_errors=True)
        extra = defaults(build) if label == "defaults" else None
        out = two_pipeline_runs(build, ("\n".join(first) + "\n").encode(), ("\n".join(later) + "\n").encode(), extra)
        say(f"    {label:9} round {n + 1}: first run {out['first']['wall']:5.1f} s wall, {out['first']['cpu']:5.1f} s "
            f"CPU (server start included); second run {out['second']['wall']:5.1f} s wall, "
            f"{out['second']['cpu']:5.1f} s CPU  ({load()})")
        return out

    rounds = 1 if ctx["quick"] else 2
    say(f"  the shipped sample ({len(lines)} records: {len(first)} in a first run, {len(later)} more in a second), "
        f"each variant in its own build folder and Spark server; the lab's settings: 2 shuffle partitions, "
        f"interpreted expressions, no AQE, JVM {JAVA_OPTIONS}; 'defaults' puts codegen, AQE and the default "
        f"collector back; {rounds} alternating round(s); {load()}")
    runs: dict[str, list[dict]] = {"lab": [], "defaults": []}
    for n in range(rounds):
        for label in ("defaults", "lab"):
            runs[label].append(one(label, n))

    def median(label: str, run: str, what: str) -> float:
        return round(statistics.median(r[run][what] for r in runs[label]), 1)

    figures = {label: {run: {what: median(label, run, what) for what in ("wall", "cpu")} for run in ("first", "second")}
               for label in runs}
    saved = {run: 1 - figures["lab"][run]["cpu"] / figures["defaults"][run]["cpu"] for run in ("first", "second")}
    measured = (f"first run {figures['lab']['first']['wall']} s ({figures['defaults']['first']['wall']} s with the "
                f"defaults), second {figures['lab']['second']['wall']} s ({figures['defaults']['second']['wall']} s); "
                f"Spark's CPU {saved['first']:.0%} / {saved['second']:.0%} less")
    say(f"  {measured}")
    return {"figure": "pipeline runs with the lab's Spark settings vs Spark's defaults", "measured": measured,
            "target": "report", "passed": None, "correct": True,
            "figures": {"medians": figures, "cpu_saved": {k: round(v, 3) for k, v in saved.items()}, "runs": runs}}
