"""4. The whole series: `kinesis-lab demo`, time per notebook, with and without notebook 00's Spark warm-up."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

from common import BENCH, REPO, clean_env, load, say


def run_demo_once(label: str, **env: str) -> dict:
    """`kinesis-lab demo` on the shipped sample in build/bench/demo-<label>; wall time and per notebook."""
    build = BENCH / f"demo-{label}"
    shutil.rmtree(build, ignore_errors=True)
    build.mkdir(parents=True)
    log = BENCH / f"demo-{label}.log"
    command = [sys.executable, "-m", "kinesis_lab.course.cli"]  # this Python's kinesis_lab (the `kinesis-lab` script may be another's)
    load_before = load()
    started = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([*command, "demo"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT, timeout=1800,
                              env=clean_env(LAB_BUILD_DIR=str(build), **env))
    wall = time.perf_counter() - started
    summary_file = build / "run-summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
    per_notebook = summary.get("notebook_seconds", {})
    if done.returncode:
        say(f"  the demo ({label}) exited with {done.returncode}: see {log}; last lines:")
        for line in log.read_text(errors="replace").splitlines()[-8:]:
            say(f"    | {line}")
    return {"label": label, "wall_seconds": round(wall, 1), "exit_code": done.returncode,
            "notebook_seconds": per_notebook, "total_seconds": summary.get("total_seconds"),
            "pipeline_07_seconds": next((v for k, v in per_notebook.items() if k.startswith("07_")), None),
            "load_before": load_before, "load_after": load(), "log": str(log.relative_to(REPO))}


def bench_demo(ctx: dict) -> dict:
    notebooks = sorted(p.name for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [n for n in ("07", "08", "09") if not any(nb.startswith(n + "_") for nb in notebooks)]
    say(f"  {len(notebooks)} notebooks: {', '.join(n[:2] for n in notebooks)}"
        + (f"; missing: {', '.join(missing)}" if missing else "") + "; twice, one after the other: without "
        f"notebook 00's Spark warm-up (KINESIS_LAB_WARM_UP=0), then as shipped; {load()}")
    runs = [run_demo_once("no-warm-up", KINESIS_LAB_WARM_UP="0"), run_demo_once("shipped")]
    names = list(runs[1]["notebook_seconds"] or runs[0]["notebook_seconds"])
    say(f"    {'notebook':45} {'no warm-up':>11} {'shipped':>9}")
    for name in names:
        say(f"    {name:45} " + " ".join(f"{r['notebook_seconds'].get(name, float('nan')):9.1f} s" for r in runs))
    for r in runs:
        say(f"  {r['label']:11} notebooks {r['total_seconds']} s, wall {r['wall_seconds']} s, exit {r['exit_code']}; "
            f"{r['load_before']} -> {r['load_after']}")
    shipped = runs[1]
    total, seven = shipped["total_seconds"], shipped["pipeline_07_seconds"]
    passed = shipped["exit_code"] == 0 and total is not None and total <= 75 and seven is not None and seven <= 25
    measured = (f"{total} s for the {len(shipped['notebook_seconds'])} notebooks, 07 {seven} s "
                f"(without the warm-up: {runs[0]['total_seconds']} s, 07 {runs[0]['pipeline_07_seconds']} s), "
                f"exit code {shipped['exit_code']}" + (f"; notebooks {', '.join(missing)} missing" if missing else ""))
    return {"figure": "`kinesis-lab demo` on the shipped sample: the notebooks' time", "measured": measured,
            "target": "<= 75 s, 07 <= 25 s", "passed": passed,
            "figures": {"shipped": shipped, "no_warm_up": runs[0], "missing_notebooks": missing}}
