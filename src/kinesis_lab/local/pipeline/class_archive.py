"""An opt-in class-data-sharing (CDS) archive for the lab's Spark JVMs: a speed-up of the developer loop.

A Spark JVM loads and verifies some 20,000 classes each time it starts. An archive of them, made once for this
JDK and these jars (``make_class_archive``), lets every later JVM map them instead: a Spark session's start
and first queries took 4.8 s of CPU instead of 8.3 s (2 cores, the lab's JVM options). With
``KINESIS_LAB_SPARK_CLASS_ARCHIVE`` naming the archive, every Spark JVM the lab starts uses it
(``spark_settings`` puts ``archive_java_options`` on the driver's command line); without it (a learner's run)
nothing changes. ``make test`` makes one under ``build/spark-class-archive/``
(``python -m kinesis_lab.local.pipeline.spark_cli class-archive <folder>`` prints its path).

The archive is published only whole: the JVM writes it at exit (``-XX:ArchiveClassesAtExit``) to a temporary
file, which is renamed once that JVM is gone. A truncated archive would crash the JVM that maps it (SIGBUS);
one made for another JDK or other jars is refused by the JVM, which then starts without it, silently.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from kinesis_lab.local import procs
from kinesis_lab.local.pipeline.server import cli_command

ARCHIVE_ENV = "KINESIS_LAB_SPARK_CLASS_ARCHIVE"  # the archive every lab Spark JVM maps, if it exists
DUMP_ENV = "KINESIS_LAB_SPARK_CLASS_ARCHIVE_DUMP"  # (make_class_archive's run) where its JVM writes one
QUIET = "-Xlog:cds=off -Xlog:cds+dynamic=off"  # no CDS warnings in the run's output
DUMPER = "org.apache.spark.deploy.SparkSubmit"  # the JVM's main class, on its command line
EXIT_TIMEOUT = 300.0  # seconds for the dumping JVM to write the archive and exit after its run


def archive_java_options() -> str:
    """The JVM options that make a Spark JVM use the archive (or, in make_class_archive's run, write it)."""
    dump = os.environ.get(DUMP_ENV)
    if dump:
        return f"-XX:ArchiveClassesAtExit={dump} {QUIET}"
    archive = os.environ.get(ARCHIVE_ENV)
    if archive and Path(archive).is_file():
        return f"-XX:SharedArchiveFile={archive} -Xshare:auto {QUIET}"
    return ""


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
    return os.path.realpath(java) if java else "java"


def archive_key() -> str:
    """This JDK and these jars: an archive is made for exactly these (JVMs with other options, the lab's C1-only
    JIT or the default one, map the same archive)."""
    import pyspark

    java = Path(_java())
    jars = Path(pyspark.__file__).parent / "jars"
    parts = {
        "java": [str(java), *(list(_size_and_time(java)) if java.is_file() else [])],
        "jars": [str(jars), *sorted((p.name, p.stat().st_size) for p in jars.glob("*.jar"))],  # the JVM checks paths
        "python": sys.version,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def _size_and_time(path: Path) -> tuple[int, int]:
    stat = path.stat()
    return stat.st_size, int(stat.st_mtime)


def class_archive_path(folder: str | Path) -> Path:
    return Path(folder) / f"spark-{archive_key()}.jsa"


def make_class_archive(folder: str | Path, *, echo=print) -> Path:
    """The archive for this JDK and these jars in ``folder``, made first if missing (~25 s on 2 cores): a Spark
    session with the lab's settings reads the shipped sample's records in a throwaway build folder, and its JVM
    writes the classes it loaded as it exits."""
    path = class_archive_path(folder)
    if path.is_file():
        return path
    with procs.file_lock(Path(folder) / ".lock", timeout=900, busy_message=f"another process is making {path}"):
        if path.is_file():
            return path
        partial = path.resolve().with_name(f"{path.name}.{os.getpid()}.partial")
        partial.unlink(missing_ok=True)
        started = time.monotonic()
        build = Path(folder).resolve() / f"build-{os.getpid()}"
        shutil.rmtree(build, ignore_errors=True)
        try:
            env = {**os.environ, DUMP_ENV: str(partial), "PYSPARK_PYTHON": sys.executable}
            subprocess.run(cli_command("load-classes", str(build)), env=env, check=True, timeout=600,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            _wait_for_exit(partial)
        finally:
            shutil.rmtree(build, ignore_errors=True)
        if not partial.is_file() or partial.stat().st_size == 0:
            raise RuntimeError(f"the Spark JVM wrote no class archive to {partial}")
        os.replace(partial, path)
        if echo:
            echo(f"Spark class archive: made {path} in {time.monotonic() - started:.0f} s")
    return path


def _wait_for_exit(partial: Path) -> None:
    """The JVM writes the archive as it exits, after its Python process may have: wait until no JVM writes it."""
    writer = procs.Signature.of(DUMPER, "-XX:ArchiveClassesAtExit", partial)
    deadline = time.monotonic() + EXIT_TIMEOUT
    while procs.find(writer):
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Spark JVM writing {partial} did not exit within {EXIT_TIMEOUT:.0f} s")
        time.sleep(0.5)
