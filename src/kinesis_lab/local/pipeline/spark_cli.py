"""Entry point of the pipeline's subprocesses (see ``server.cli_command``), run with
``python -P -m kinesis_lab.local.pipeline.spark_cli``:

- ``run|dry-run --spec <spec> [--full-refresh-all]``: the ``spark-pipelines`` CLI, see pipelines_cli;
- ``watch-server <lakehouse> <pid> <idle timeout> <start time>``: a server's watchdog (server.watch_server);
- ``warm-server <lakehouse>``: the warm-up's start of the build folder's server (see warm_server);
- ``class-archive <folder>`` / ``load-classes <build>``: the Spark JVMs' class archive (class_archive).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from kinesis_lab.cloud.config import LAYER_SCHEMAS
from kinesis_lab.local import stack
from kinesis_lab.local.pipeline.class_archive import make_class_archive
from kinesis_lab.local.pipeline.runner import STATIC_CONF_ENV, spark_settings
from kinesis_lab.local.pipeline.server import SERVER_ENV, connect_to_build_server, watch_server


def _create_schemas(spark, default_schema: str | None) -> None:
    for schema in dict.fromkeys(filter(None, (default_schema, *LAYER_SCHEMAS))):
        spark.sql(f"CREATE DATABASE IF NOT EXISTS `{schema}`")


def pipelines_cli() -> None:
    """The stock ``spark-pipelines`` CLI (pyspark.pipelines.cli.main) with two changes made before it
    runs: it uses the build folder's long-lived Spark Connect server (SERVER_ENV set, see
    connect_to_build_server) or starts its own listening on a free local port, not the fixed 15002
    (so runs from several notebooks or tests do not collide); and the spec's database and the layer
    schemas the tables are published to (``bronze.bronze_events``) exist: the CLI fails with
    SCHEMA_NOT_FOUND otherwise (Databricks creates them itself), and pipeline files may not run DDL."""
    from pyspark.pipelines import cli
    from pyspark.sql.connect.session import SparkSession as RemoteSparkSession

    args = sys.argv[1:]
    spec = cli.load_pipeline_spec(Path(args[args.index("--spec") + 1])) if "--spec" in args else None
    if spec is not None and os.environ.get(SERVER_ENV):
        static_conf = json.loads(os.environ.get(STATIC_CONF_ENV) or "{}")
        spark = connect_to_build_server(static_conf, Path(os.environ[SERVER_ENV]))
        _create_schemas(spark, spec.database)
    elif spec is not None:
        port = stack.free_port()
        settings = {
            **json.loads(os.environ.get(STATIC_CONF_ENV) or "{}"),
            **spec.configuration,
            "spark.connect.grpc.binding.address": "127.0.0.1",
            "spark.connect.grpc.binding.port": str(port),
        }
        os.environ.pop("SPARK_REMOTE", None)
        # what `--remote local` does (start the JVM with the Connect plugin and a random auth token,
        # static settings apply here and only here), but on our port; pyspark 4.3 API
        RemoteSparkSession._start_connect_server("local[*]", settings)
        os.environ["SPARK_LOCAL_REMOTE"] = "1"  # stopping the session stops this server
        os.environ["SPARK_CONNECT_MODE_ENABLED"] = "1"
        # "localhost": the client then talks plain text (with the token), as for `--remote local`
        spark = RemoteSparkSession.builder.remote(f"sc://localhost:{port}").getOrCreate()
        _create_schemas(spark, spec.database)
        # cli.run's SparkSession.builder.getOrCreate() now returns this session
    cli.main()


def warm_server(lakehouse: Path) -> None:
    """(The warm-up's subprocess, see warmup.warm_up_pipeline_server) start the build folder's server,
    then make its Hive metastore create its schema and the layer schemas, as the first run would.
    (Running the pipeline once more on a few throwaway records was measured too: it saved the first
    real run ~2 s of its ~13 s of CPU, most of which is the run's own work, for ~15 s of CPU during
    notebooks 01-06.)"""
    started = time.monotonic()
    spark = connect_to_build_server(json.loads(os.environ.get(STATIC_CONF_ENV) or "{}"), lakehouse)
    _create_schemas(spark, None)
    spark.stop()  # releases this session; the server keeps running
    print(f"warm-up done in {time.monotonic() - started:.1f} s", flush=True)


def load_the_classes(build: Path) -> None:
    """(In make_class_archive's subprocess) what every lab Spark JVM does first, on the shipped sample: start,
    read JSON lines, aggregate. (Archiving the Hive metastore, tables and a stream as well took 38 s instead of
    ~25 s and saved no more.)"""
    from pyspark.sql import SparkSession

    from kinesis_lab.cloud.dataset import SAMPLE_PATH
    from kinesis_lab.cloud.records import iter_records

    landed = build / "landed"
    landed.mkdir(parents=True)
    (landed / "records.json").write_bytes(b"".join(r.data for r in iter_records(SAMPLE_PATH)))
    _, static = spark_settings(source_path=landed, build_dir=build)
    builder = SparkSession.builder.master("local[2]").appName("kinesis-lab-class-archive")
    for key, value in static.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    batch = spark.read.json(str(landed))
    batch.groupBy("Country").count().collect()
    spark.stop()


def main() -> None:
    if sys.argv[1:2] == ["watch-server"]:
        lakehouse, pid, idle_timeout = Path(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
        watch_server(lakehouse, pid, idle_timeout, started=(sys.argv[5:] or [""])[0] or None)
    elif sys.argv[1:2] == ["warm-server"]:
        warm_server(Path(sys.argv[2]))
    elif sys.argv[1:2] == ["class-archive"]:  # make test: the archive's path, made first if missing
        print(make_class_archive(sys.argv[2], echo=lambda line: print(line, file=sys.stderr)))
    elif sys.argv[1:2] == ["load-classes"]:
        load_the_classes(Path(sys.argv[2]))
    else:
        pipelines_cli()


if __name__ == "__main__":
    main()
