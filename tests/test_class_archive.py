"""The Spark JVMs' class archive (kinesis_lab.local.pipeline.class_archive): opt-in, used by every lab Spark JVM
when set, never published half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kinesis_lab.local import pipeline as lp
from kinesis_lab.local.pipeline import class_archive

REPO = Path(__file__).resolve().parents[1]


def test_without_the_setting_the_jvms_get_no_archive_option(monkeypatch, tmp_path):
    monkeypatch.delenv(class_archive.ARCHIVE_ENV, raising=False)
    monkeypatch.delenv(class_archive.DUMP_ENV, raising=False)
    assert class_archive.archive_java_options() == ""
    monkeypatch.setenv(class_archive.ARCHIVE_ENV, str(tmp_path / "missing.jsa"))
    assert class_archive.archive_java_options() == ""  # a missing archive is ignored, not an error
    _, static = lp.spark_settings(source_path=tmp_path, build_dir=tmp_path / "build")
    assert "SharedArchiveFile" not in static["spark.driver.extraJavaOptions"]


def test_with_the_setting_every_lab_jvm_gets_the_archive_option(monkeypatch, tmp_path):
    archive = tmp_path / "spark.jsa"
    archive.write_bytes(b"x")
    monkeypatch.setenv(class_archive.ARCHIVE_ENV, str(archive))
    _, static = lp.spark_settings(source_path=tmp_path, build_dir=tmp_path / "build")
    options = static["spark.driver.extraJavaOptions"].split()
    assert f"-XX:SharedArchiveFile={archive}" in options and "-Xshare:auto" in options
    assert "-Xlog:cds=off" in options  # a JVM that cannot use it says nothing into the run's output
    assert lp.runner.JAVA_OPTIONS.split()[0] in options  # the lab's own options are kept


def test_a_failed_make_publishes_no_archive(tmp_path):
    """The JVM cannot start (JAVA_HOME names no JDK): the make fails, and nothing is left to be mapped."""
    env = {**os.environ, "JAVA_HOME": str(tmp_path / "no-jdk")}
    made = subprocess.run(lp.server.cli_command("class-archive", str(tmp_path / "archive")), env=env,
                          capture_output=True, text=True, timeout=300)
    assert made.returncode != 0 and "CalledProcessError" in made.stderr
    assert sorted(p.name for p in (tmp_path / "archive").iterdir()) == [".lock"]


PROBE = """
import json, sys
from pyspark import SparkContext
from pyspark.sql import SparkSession
spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false") \\
    .config("spark.driver.extraJavaOptions", sys.argv[1]).getOrCreate()
maps = open(f"/proc/{SparkContext._gateway.proc.pid}/maps").read().split()
print(json.dumps(sorted({word for word in maps if word.endswith(".jsa")})))
spark.stop()
"""


@pytest.mark.spark
@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="reads /proc/<pid>/maps")
def test_a_spark_jvm_maps_the_archive_made_for_it():
    """make test's archive (made here if missing): a Spark JVM started with archive_java_options maps it."""
    archive = class_archive.make_class_archive(REPO / "build" / "spark-class-archive", echo=None)
    env = {**os.environ, class_archive.ARCHIVE_ENV: str(archive)}
    env.pop(class_archive.DUMP_ENV, None)
    options = subprocess.run([sys.executable, "-c", "from kinesis_lab.local.pipeline.class_archive import "
                              "archive_java_options as o; print(o())"], env=env, capture_output=True, text=True,
                             check=True).stdout.strip()
    probe = subprocess.run([sys.executable, "-c", PROBE, options], env=env, capture_output=True, text=True,
                           timeout=300)
    assert probe.returncode == 0, probe.stderr[-2000:]
    mapped = json.loads(probe.stdout.strip().splitlines()[-1])
    assert str(archive) in mapped, mapped  # the top archive, beside the JDK's own
