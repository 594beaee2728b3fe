"""Warming Spark up before it is needed: notebook 00 starts the build folder's Spark Connect server in
the background (``warm_up_pipeline_server``) while notebooks 01-06 run, so the first pipeline run
(notebook 07) reuses it instead of waiting for its start. The subprocess is ``spark_cli warm-server``."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kinesis_lab.cloud.config import BuildFolderError, load_config, writable_folder
from kinesis_lab.local.pipeline.paths import discovery_path, external_location_dir, lakehouse_dir
from kinesis_lab.local.pipeline.runner import run_env, spark_settings
from kinesis_lab.local.pipeline.server import cli_command, server_pids, start_in_progress

WARM_UP_ENV = "KINESIS_LAB_WARM_UP"  # "0": warm_up_pipeline_server does nothing (benchmark 4 compares both)


def warm_up_pipeline_server(
    build_dir: str | Path,
    *,
    target: str = "local",
    pipeline_dir: str | Path | None = None,
    echo: Callable[[str], None] | None = print,
) -> bool:
    """Start the build folder's Spark Connect server in the background, now, so that the first
    pipeline run (notebook 07) finds it running instead of waiting for its ~25 s start; returns at once
    (True if a start was launched). Notebook 00 calls it as soon as the local stack runs: notebooks
    01-06 overlap the start. The server is the one ``run_pipeline`` would start (same settings, same
    environment), so the run reuses it, or waits for this start if it is still going (START_LOCK).

    ``pipeline_dir``: the pipeline's folder, as the run will be given it (None: the repository's
    ``databricks/pipeline``, as notebooks 07-09 use): it is part of the server's environment.

    Does nothing (False) on target aws, inside Databricks, without Java, when the build folder's
    server already runs or is being started, when the build folder cannot be written (echo says so),
    or with ``KINESIS_LAB_WARM_UP=0``. The start's log: ``lakehouse/logs/warm-up-*.log``; if the start fails, the run starts a server
    itself as before."""
    if target != "local" or "DATABRICKS_RUNTIME_VERSION" in os.environ or os.environ.get(WARM_UP_ENV) == "0":
        return False
    try:
        lakehouse = writable_folder(lakehouse_dir(build_dir).resolve(), build_dir)
    except BuildFolderError as exc:
        if echo is not None:
            echo(str(exc))
        return False
    if server_pids(build_dir) or start_in_progress(discovery_path(build_dir)):
        return False
    if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
        return False  # notebook 00's checks and `kinesis-lab doctor` say how to install it
    if pipeline_dir is None:
        pipeline_dir = load_config().home / "databricks" / "pipeline"
    _, static_conf = spark_settings(source_path=external_location_dir(build_dir), build_dir=build_dir)
    env = run_env(Path(pipeline_dir).resolve(), static_conf)
    logs = lakehouse / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / f"warm-up-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"
    with open(log_path, "w", encoding="utf-8") as log:
        subprocess.Popen(
            cli_command("warm-server", str(lakehouse)),
            cwd=lakehouse,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives the notebook's kernel
        )
    if echo is not None:
        echo("Spark (for notebooks 07-09) is starting in the background; nothing to wait for here")
    return True
