"""The pipeline's tables, read with pyarrow (no Spark, so a notebook needs no second JVM, which would
also fight over the Derby metastore lock): parquet folders in ``lakehouse/warehouse/<schema>.db/``."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

from kinesis_lab.cloud.config import BRONZE_TABLE, LAYER_SCHEMAS, QUARANTINE_TABLE, SILVER_TABLE, schema_of
from kinesis_lab.local.pipeline.paths import warehouse_dir

GOLD_PREFIX = "gold_"


def table_paths(build_dir: str | Path) -> dict[str, Path]:
    """Table name -> its parquet folder in the local warehouse (tables that exist so far, every layer)."""
    paths = {}
    for schema in LAYER_SCHEMAS:
        schema_dir = warehouse_dir(build_dir) / f"{schema}.db"
        if schema_dir.is_dir():
            paths.update(
                {
                    p.name: p
                    for p in sorted(schema_dir.iterdir())
                    if p.is_dir() and not p.name.startswith((".", "_")) and p.name.startswith(schema + "_")
                }
            )
    return paths


def _data_files(table_dir: Path) -> list[Path]:
    """The table's parquet files. A streaming table lists its committed files in ``_spark_metadata``
    (a failed micro-batch can leave uncommitted files behind); other tables: every visible file."""
    log_dir = table_dir / "_spark_metadata"
    if log_dir.is_dir():
        added: set[str] = set()
        removed: set[str] = set()
        for entry in log_dir.iterdir():
            if entry.name.startswith(".") or not re.fullmatch(r"\d+(\.compact)?", entry.name):
                continue
            for line in entry.read_text().splitlines()[1:]:  # first line: format version
                if line.strip():
                    record = json.loads(line)
                    (removed if record.get("action") == "delete" else added).add(record["path"])
        paths = [Path(unquote(urlparse(uri).path)) for uri in sorted(added - removed)]
        return [p for p in paths if p.exists()]
    return sorted(p for p in table_dir.rglob("*.parquet") if not p.name.startswith((".", "_")))


def read_table(build_dir: str | Path, name: str, columns: list[str] | None = None):
    """A pipeline table as a pandas DataFrame (read with pyarrow; Spark is not needed)."""
    import pandas as pd
    import pyarrow.parquet as pq

    paths = table_paths(build_dir)
    if name not in paths:
        raise KeyError(
            f"no table {schema_of(name)}.{name} in {warehouse_dir(build_dir)} "
            f"(has: {', '.join(paths) or 'none'})"
        )
    files = _data_files(paths[name])
    if not files:
        return pd.DataFrame(columns=columns or [])
    tables = [pq.read_table(f, columns=columns) for f in files]
    import pyarrow as pa

    # integers stay integers when a value is missing (a quarantined Year shows 2018, not 2018.0)
    nullable_ints = {
        pa.int8(): pd.Int8Dtype(),
        pa.int16(): pd.Int16Dtype(),
        pa.int32(): pd.Int32Dtype(),
        pa.int64(): pd.Int64Dtype(),
    }
    return pa.concat_tables(tables, promote_options="default").to_pandas(types_mapper=nullable_ints.get)


def table_reader(build_dir: str | Path) -> Callable[[str, list[str] | None], object]:
    """``read(name, columns)`` -> the table as ``read_table`` gives it, or None if the pipeline has not
    made it yet: the reader ``cloud.ledger.build_ledger(tables=...)`` takes."""

    def read(name: str, columns: list[str] | None = None):
        return read_table(build_dir, name, columns) if name in table_paths(build_dir) else None

    return read


def table_rows(build_dir: str | Path, name: str) -> int:
    """Row count from the parquet footers (no data read)."""
    import pyarrow.parquet as pq

    paths = table_paths(build_dir)
    if name not in paths:
        return 0
    return sum(pq.ParquetFile(f).metadata.num_rows for f in _data_files(paths[name]))


def pipeline_summary(build_dir: str | Path) -> dict:
    """Rows per layer, quarantined rows per broken rule, rows per gold table, and the table folders."""
    paths = table_paths(build_dir)
    by_rule: dict[str, int] = {}
    if QUARANTINE_TABLE in paths:
        for rules in read_table(build_dir, QUARANTINE_TABLE, ["broken_rules"])["broken_rules"]:
            for rule in rules if rules is not None else []:
                by_rule[rule] = by_rule.get(rule, 0) + 1
    return {
        "bronze_rows": table_rows(build_dir, BRONZE_TABLE),
        "silver_rows": table_rows(build_dir, SILVER_TABLE),
        "quarantine_rows": table_rows(build_dir, QUARANTINE_TABLE),
        "quarantine_by_rule": dict(sorted(by_rule.items(), key=lambda item: (-item[1], item[0]))),
        "gold_tables": {name: table_rows(build_dir, name) for name in paths if name.startswith(GOLD_PREFIX)},
        "table_paths": {name: str(path) for name, path in paths.items()},
    }
