"""Environment checks, each with the fix to print when it fails (``kinesis-lab doctor``, notebook 00)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from kinesis_lab.local import stack

MIN_PYTHON = (3, 11)
MIN_JAVA = 17
MIN_FREE_GB = 2.0
REQUIRED_PACKAGES = ("boto3", "moto", "pyspark", "pandas", "pyarrow", "papermill", "matplotlib", "tqdm")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def java_major_version(java: str | None = None) -> int | None:
    """The major version of ``java`` on PATH (or JAVA_HOME), or None if there is none."""
    java = java or shutil.which("java")
    if not java:
        return None
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if not m:
        return None
    major = int(m.group(1))
    return int(m.group(2)) if major == 1 and m.group(2) else major  # "1.8" -> 8


def check_python() -> Check:
    v = sys.version_info
    ok = (v.major, v.minor) >= MIN_PYTHON
    return Check("python", ok, f"{v.major}.{v.minor}.{v.micro}",
                 "" if ok else "install Python 3.11+ (python.org, pyenv or `conda env create -f environment.yml`)")


def check_java() -> Check:
    major = java_major_version()
    if major is None:
        return Check("java", False, "not found",
                     "install a JDK 17+: `sudo apt-get install openjdk-17-jdk-headless`, `brew install openjdk@17`, "
                     "or `conda env create -f environment.yml`")
    ok = major >= MIN_JAVA
    return Check("java", ok, str(major), "" if ok else f"Spark 4 needs Java {MIN_JAVA}+: install openjdk 17 and put it on PATH")


def check_packages() -> Check:
    missing = [p for p in REQUIRED_PACKAGES if importlib.util.find_spec(p) is None]
    return Check("packages", not missing, "all present" if not missing else "missing: " + ", ".join(missing),
                 "" if not missing else "run `make install` (or `pip install -e .[dev]`)")


def check_disk(path: Path) -> Check:
    free_gb = shutil.disk_usage(path).free / 1e9
    ok = free_gb >= MIN_FREE_GB
    return Check("disk", ok, f"{free_gb:.1f} GB free in {path}",
                 "" if ok else f"free at least {MIN_FREE_GB:.0f} GB (Spark's warehouse and the build folder live here)")


def check_stack(state_dir: Path) -> Check:
    st = stack.status(state_dir)
    if st["up"]:
        return Check("local stack", True, f"up at {st['endpoint']}")
    return Check("local stack", False, "not running", "start it with `kinesis-lab up` (notebook 00 starts it too)")


def run_checks(home: Path, state_dir: Path, include_stack: bool = True) -> list[Check]:
    checks = [check_python(), check_java(), check_packages(), check_disk(home)]
    if include_stack:
        checks.append(check_stack(state_dir))
    return checks
