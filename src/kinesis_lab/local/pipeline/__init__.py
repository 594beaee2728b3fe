"""Running the Databricks medallion pipeline on this machine (notebooks 07-09 and the tests).

Local Spark has no S3 filesystem, so ``mirror_s3_prefix`` copies what Firehose wrote into a local
folder (our "external location"); ``run_pipeline`` runs the same pipeline files that Databricks runs
(``databricks/pipeline/``) with the open-source ``spark-pipelines`` CLI: parquet tables in a Hive
metastore kept under the build folder; ``read_table``/``pipeline_summary`` read the results with
pyarrow, so a notebook needs no second JVM (which would also fight over the Derby metastore lock).

Layout under ``build_dir``: ``external_location/`` (the mirror), ``lakehouse/`` (rendered spec,
warehouse, metastore, checkpoints, run logs, ``connect-server/``). The tables are in Spark's session
catalog, one schema per layer as on Databricks (``bronze.bronze_events`` in ``warehouse/bronze.db/``).
Deleting ``lakehouse/`` (after ``stop_pipeline_server``; ``reset_pipeline`` does both) starts the
pipeline afresh.

Spark itself runs in a long-lived Spark Connect server, one per build folder (``reuse_server=True``,
the default): the first run (or, earlier, notebook 00's ``warm_up_pipeline_server``) starts it
(pyspark's ``spark.local.connect.reuse`` opt-in, with its discovery file in
``lakehouse/connect-server/``), later runs connect to it, each in a session of its own, and skip the
~25 s of JVM and Hive metastore start. ``stop_pipeline_server`` stops it.

The run subprocess (``python -m kinesis_lab.local.pipeline.spark_cli``) is the ``spark-pipelines``
CLI with two additions: it connects to the build folder's server (or, with ``reuse_server=False``,
starts an in-process one on a free port, not the fixed 15002, so parallel runs do not collide) and
the spec's database and the layer schemas are created first (the stock CLI expects them to exist;
Databricks creates them itself).

One module per job: ``paths`` (the build folder's layout), ``mirror`` (the external location),
``runner`` (settings, spec, the run and its watching), ``server`` (the long-lived Spark Connect
server), ``warmup`` (starting that server early, from notebook 00), ``tables`` (reading the results),
``spark_cli`` (the subprocesses' entry point).
"""

from __future__ import annotations

from kinesis_lab.cloud.config import BuildFolderError
from kinesis_lab.local.pipeline.mirror import MirrorResult, mirror_s3_prefix
from kinesis_lab.local.pipeline.paths import (
    PipelineError,
    discovery_path,
    external_location_dir,
    lakehouse_dir,
    server_dir,
    warehouse_dir,
)
from kinesis_lab.local.pipeline.runner import (
    DEFAULT_TIMEOUT,
    PROGRESS_LINE,
    SERVER_LINE,
    SPEC_NAME,
    STATIC_CONF_ENV,
    PipelineRun,
    build_lock,
    render_spec,
    reset_pipeline,
    run_pipeline,
    spark_settings,
)
from kinesis_lab.local.pipeline.server import (
    RUN_MARK,
    SERVER_CLASS,
    SERVER_ENV,
    SERVER_MARKER,
    SERVER_START_TIMEOUT,
    START_LOCK,
    server_conf,
    server_pids,
    stop_pipeline_server,
)
from kinesis_lab.local.pipeline.tables import (
    BRONZE_TABLE,
    GOLD_PREFIX,
    QUARANTINE_TABLE,
    SILVER_TABLE,
    pipeline_summary,
    read_table,
    table_paths,
    table_reader,
    table_rows,
)
from kinesis_lab.local.pipeline.warmup import warm_up_pipeline_server

__all__ = [
    # the build folder
    "BuildFolderError",
    "PipelineError",
    "discovery_path",
    "external_location_dir",
    "lakehouse_dir",
    "server_dir",
    "warehouse_dir",
    # the external location
    "MirrorResult",
    "mirror_s3_prefix",
    # running the pipeline
    "DEFAULT_TIMEOUT",
    "PROGRESS_LINE",
    "SERVER_LINE",
    "SPEC_NAME",
    "STATIC_CONF_ENV",
    "PipelineRun",
    "build_lock",
    "render_spec",
    "reset_pipeline",
    "run_pipeline",
    "spark_settings",
    # the build folder's Spark Connect server
    "RUN_MARK",
    "SERVER_CLASS",
    "SERVER_ENV",
    "SERVER_MARKER",
    "SERVER_START_TIMEOUT",
    "START_LOCK",
    "server_conf",
    "server_pids",
    "stop_pipeline_server",
    "warm_up_pipeline_server",
    # the tables
    "BRONZE_TABLE",
    "GOLD_PREFIX",
    "QUARANTINE_TABLE",
    "SILVER_TABLE",
    "pipeline_summary",
    "read_table",
    "table_paths",
    "table_reader",
    "table_rows",
]
