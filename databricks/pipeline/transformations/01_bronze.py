"""Bronze: every line that lands under the Firehose prefix, as it came (streaming table ``bronze.bronze_events``).

Pipeline configuration:
  lab.source_path  where Firehose writes, e.g. s3://<bucket>/bronze/ (a Unity Catalog external location)
  lab.source_mode  ``autoloader`` (Databricks, default) or ``files`` (open-source Spark, local folder)

Why Auto Loader reads *text* and not json: with ``cloudFiles.format=json`` a line that is not JSON
(someone drops a CSV in the prefix) becomes a row of NULLs unless a corrupt-record column is set up,
the schema is inferred (and evolves) from whatever landed first, and with inferred types a value such
as "N/A" in a numeric column moves to ``_rescued_data``. Reading text keeps every line verbatim in
``_raw_line``, needs no schema inference, and the same ``medallion.parse_bronze`` parses it with an
explicit all-string schema on Databricks and locally; typing and checks happen in silver.
Compressed objects (``.gz``) are decompressed by the file readers based on the file extension.
"""

import medallion
from pyspark import pipelines as dp
from pyspark.sql import DataFrame

SOURCE_PATH = spark.conf.get("lab.source_path", "")  # noqa: F821 - `spark` is injected by the pipeline
SOURCE_MODE = spark.conf.get("lab.source_mode", "autoloader")  # noqa: F821
if not SOURCE_PATH:
    raise ValueError(
        "set lab.source_path in the pipeline configuration (where Firehose writes, e.g. s3://<bucket>/bronze/)"
    )


def read_landed_lines() -> DataFrame:
    """One row (``value``) per line of every file under SOURCE_PATH, new files only on each update."""
    if SOURCE_MODE == "autoloader":
        reader = spark.readStream.format("cloudFiles").option("cloudFiles.format", "text")  # noqa: F821
    elif SOURCE_MODE == "files":
        # recursiveFileLookup: read ingestion_date=YYYY/MM/dd/ folders without partition inference
        reader = spark.readStream.format("text").option("recursiveFileLookup", "true")  # noqa: F821
    else:
        raise ValueError(f"lab.source_mode must be 'autoloader' or 'files', not {SOURCE_MODE!r}")
    return reader.load(SOURCE_PATH)


@dp.table(
    name="bronze.bronze_events",
    comment="Raw Firehose lines: the line, every JSON field as text, _parse_ok, source file, ingestion time.",
)
def bronze_events() -> DataFrame:
    return medallion.parse_bronze(medallion.with_source_file(read_landed_lines()))
