"""Notebooks 06-09 inside a Databricks workspace (a Git folder, or the whole repository imported).

There the notebooks' parameters are widgets, the pipeline's tables are Unity Catalog tables read with
the notebook's ``spark`` (``<catalog>.<layer>.<table>``), and what needs AWS credentials that can change
IAM (notebook 06's role) runs on the learner's machine: serverless compute has none. Notebook 09
reconciles what landed in the bucket, read with Spark through the external location, with the tables.

A notebook finds this package before importing it: installed (``pip install -e .``), or in the
repository's ``src/`` next to its ``notebooks/`` folder (the working folder of a Databricks notebook
is its own folder on DBR 14.0+ and serverless).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from kinesis_lab.cloud.config import LabConfig, qualified_name

RUNTIME_VAR = "DATABRICKS_RUNTIME_VERSION"  # set by every Databricks runtime, serverless included
MIN_SDK_VERSION = (0, 54)  # external_locations.create(enable_file_events=...)
LANDED_TABLES = ("bronze_events", "silver_events", "silver_quarantine")


def in_databricks() -> bool:
    """True when this code runs on Databricks compute (a notebook, a job, a pipeline)."""
    return RUNTIME_VAR in os.environ


def widget_values(dbutils, **defaults: object) -> tuple[str | None, ...]:
    """A text widget per keyword (created with that value, or empty for None), read back in that
    order: what the learner typed, or a job's parameter. An empty widget gives None."""
    for name, default in defaults.items():
        dbutils.widgets.text(name, "" if default is None else str(default))
    return tuple(dbutils.widgets.get(name).strip() or None for name in defaults)


def require_sdk(minimum: tuple[int, int] = MIN_SDK_VERSION) -> None:
    """The runtime's databricks-sdk must know the arguments notebook 06 passes."""
    from databricks.sdk.version import __version__

    if tuple(int(part) for part in __version__.split(".")[:2]) < minimum:
        raise RuntimeError(
            f"databricks-sdk {__version__} is too old for this notebook (needs {'.'.join(map(str, minimum))} or "
            "later): run `%pip install --upgrade databricks-sdk` in a cell, then `dbutils.library.restartPython()`"
        )


def uc_access_in_workspace(w, *, credential_name: str, location_name: str, url: str, role_arn: str,
                           sleep=time.sleep) -> dict:
    """Notebook 06 inside Databricks: the storage credential, then (once the role trusts its external id) the
    external location and its validation; returns ``uc.location_and_validation``'s answer.

    Databricks compute cannot change IAM, so a credential whose external id the role does not trust yet stops
    here with ``uc.TrustNotUpdated`` naming the exact commands to run on the learner's machine; the next run
    goes on. A credential created just now is refused at once (nobody can trust an id issued a moment ago);
    an older one is validated again while a trust update propagates."""
    from kinesis_lab.cloud import uc

    _, external_id, created = uc.ensure_storage_credential(w, credential_name, role_arn)
    rows = uc.validate_storage_credential(w, credential_name, url, delays=() if created else uc.PROPAGATION_DELAYS,
                                          sleep=sleep)
    if uc.failed_read_checks(rows):
        raise uc.TrustNotUpdated(
            f"storage credential {credential_name} is ready; the UC role does not trust its external id yet "
            f"(Unity Catalog cannot read {url}). Databricks cannot change IAM: on your machine (AWS credentials), "
            f"from the repository root, run\n{uc.trust_step(role_arn, external_id)}\n(or run notebook 06 there "
            "with target=\"aws\" and a workspace login: it does it), then run this notebook again.")
    return uc.location_and_validation(w, credential_name=credential_name, location_name=location_name, url=url,
                                      sleep=sleep)


def workspace_checks(w, *, credential_name: str, location_name: str, url: str, role_arn: str) -> dict[str, bool]:
    """The credential and the location read back from Unity Catalog: what notebook 06 made."""
    credential = w.storage_credentials.get(credential_name)
    location = w.external_locations.get(location_name)
    return {
        "the credential uses the UC role": credential.aws_iam_role.role_arn == role_arn,
        "the credential is read-only": credential.read_only is True,
        "the location is the landing bucket": location.url.rstrip("/") == url.rstrip("/"),
        "the location uses the credential": location.credential_name == credential_name,
        "the location is read-only": location.read_only is True,
    }


def table_reader(cfg: LabConfig, spark=None) -> Callable[[str], object]:
    """``load_table(name)`` -> pandas DataFrame: the Unity Catalog table ``<catalog>.<layer>.<name>`` read
    with ``spark`` (pass the notebook's inside Databricks), else the local pipeline's warehouse."""
    if spark is not None:
        return lambda name: spark.table(qualified_name(cfg.catalog, name)).toPandas()
    from kinesis_lab.local.pipeline import read_table

    return lambda name: read_table(cfg.build_dir, name)


def landing_url(cfg: LabConfig, bucket: str | None) -> str:
    """Where the pipeline reads (its ``lab.source_path``): ``s3://<bucket>/<static Firehose prefix>``."""
    from kinesis_lab.cloud.prefixes import static_folder

    if not bucket:
        raise ValueError("set the widget `bucket` to the landing bucket (jm-demo-s3-lab-<account>-<region>)")
    return f"s3://{bucket}/{static_folder(cfg.s3_prefix)}"


def reconcile_landing(spark, source_path: str, catalog: str) -> tuple[dict[str, int], list[str]]:
    """Count what landed under ``source_path`` (every non-blank line of every object, read with Spark;
    ``s3://`` goes through the Unity Catalog external location) and check it against the pipeline's tables.

    Returns (figures, problems); problems is empty when bronze holds every landed line, silver +
    quarantine hold every landed event once, and no landed event id is missing from both."""
    from pyspark.sql import functions as F

    lines = spark.read.option("recursiveFileLookup", "true").text(source_path).where(F.trim("value") != "")
    event_id = F.get_json_object("value", "$.event_id")
    landed = lines.select(event_id.alias("event_id"))
    counts = landed.agg(
        F.count(F.lit(1)).alias("lines"),
        F.count_distinct("event_id").alias("ids"),
        F.count(F.when(F.col("event_id").isNull(), 1)).alias("no_id"),
    ).first()
    table = {name: spark.table(qualified_name(catalog, name)) for name in LANDED_TABLES}
    kept = table["silver_events"].select("event_id").unionByName(table["silver_quarantine"].select("event_id"))
    kept_ids = kept.where(F.col("event_id").isNotNull())
    figures = {
        "landed lines": counts["lines"],
        "landed events": counts["ids"] + counts["no_id"],  # a line without an event id is an event of its own
        "bronze rows": table["bronze_events"].count(),
        "silver rows": table["silver_events"].count(),
        "quarantine rows": table["silver_quarantine"].count(),
        "landed event ids in neither silver table": landed.where(F.col("event_id").isNotNull())
        .select("event_id").distinct().join(kept_ids, "event_id", "left_anti").count(),
        "event ids more than once in silver + quarantine": kept_ids.groupBy("event_id").count()
        .where(F.col("count") > 1).count(),
    }
    problems = []
    if figures["bronze rows"] != figures["landed lines"]:
        problems.append(f"bronze_events has {figures['bronze rows']} rows, {figures['landed lines']} lines landed "
                        "under " + source_path + ": run the pipeline again if files landed since its last update")
    kept_rows = figures["silver rows"] + figures["quarantine rows"]
    if kept_rows != figures["landed events"]:
        problems.append(f"silver_events + silver_quarantine have {kept_rows} rows, {figures['landed events']} "
                        "distinct events landed")
    for key in ("landed event ids in neither silver table", "event ids more than once in silver + quarantine"):
        if figures[key]:
            problems.append(f"{figures[key]} {key}")
    return figures, problems
