"""kinesis_lab.course.databricks_runtime without Spark: detection, widgets, where the tables and the landing are."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kinesis_lab.cloud.config import LabConfig, qualified_name, schema_of
from kinesis_lab.course import databricks_runtime as dbr


class Widgets:
    def __init__(self, typed: dict[str, str]):
        self.typed, self.defined = typed, {}

    def text(self, name, defaultValue, label=None):
        self.defined[name] = defaultValue

    def get(self, name):
        return self.typed.get(name, self.defined[name])


class DbUtils:
    def __init__(self, typed):
        self.widgets = Widgets(typed)


def test_in_databricks_follows_the_runtime_variable(monkeypatch):
    monkeypatch.delenv("DATABRICKS_RUNTIME_VERSION", raising=False)
    assert dbr.in_databricks() is False
    monkeypatch.setenv("DATABRICKS_RUNTIME_VERSION", "client.4.0")  # serverless sets one too
    assert dbr.in_databricks() is True


def test_widget_values_define_every_widget_and_read_them_in_order():
    dbutils = DbUtils({"bucket": " my-bucket ", "source_path": ""})
    values = dbr.widget_values(dbutils, catalog="kinesis_lab", bucket=None, source_path=None)
    assert values == ("kinesis_lab", "my-bucket", None)  # typed values trimmed, empty is None
    assert dbutils.widgets.defined == {"catalog": "kinesis_lab", "bucket": "", "source_path": ""}


def test_tables_live_in_their_layer_schema():
    assert qualified_name("kinesis_lab_prod", "silver_quarantine") == "kinesis_lab_prod.silver.silver_quarantine"
    assert schema_of("gold_rate_by_region_year") == "gold"
    with pytest.raises(ValueError, match="'events' is not a pipeline table"):
        schema_of("events")


def test_table_reader_reads_unity_catalog_names_with_spark(tmp_path):
    class Frame:
        def __init__(self, name):
            self.name = name

        def toPandas(self):
            return f"pandas of {self.name}"

    class Spark:
        def table(self, name):
            return Frame(name)

    load_table = dbr.table_reader(LabConfig(home=tmp_path, catalog="kinesis_lab"), Spark())
    assert load_table("bronze_events") == "pandas of kinesis_lab.bronze.bronze_events"


def test_landing_url_is_the_static_firehose_prefix(tmp_path):
    cfg = LabConfig(home=tmp_path)
    assert dbr.landing_url(cfg, "jm-demo-s3-lab-1-us-east-1") == "s3://jm-demo-s3-lab-1-us-east-1/bronze/"
    with pytest.raises(ValueError, match="set the widget `bucket`"):
        dbr.landing_url(cfg, None)


def test_an_old_sdk_is_refused_with_the_fix(monkeypatch):
    import databricks.sdk.version

    dbr.require_sdk()  # the installed one is recent enough
    monkeypatch.setattr(databricks.sdk.version, "__version__", "0.30.0")
    with pytest.raises(RuntimeError, match=r"databricks-sdk 0.30.0 is too old .*needs 0.54 or later.*%pip install"):
        dbr.require_sdk()


SETUP_MARK = "IN_DATABRICKS = dbr.in_databricks()"
PRELUDE = '''
class _Widgets:
    def __init__(self):
        self.values = {}
    def text(self, name, default, label=None):
        self.values.setdefault(name, default)
    def get(self, name):
        return self.values[name]
class _DbUtils:
    widgets = _Widgets()
dbutils = _DbUtils()
'''


@pytest.mark.parametrize("edition", ["", "es"], ids=["en", "es"])
@pytest.mark.parametrize("number", ["06", "07", "08", "09"])
def test_the_setup_cell_finds_the_package_in_an_imported_repository(number, edition, tmp_path):
    """Inside Databricks nothing is installed: the set-up cell imports the lab's package from the repository's
    src/, found from the notebook's folder up (notebooks/ or notebooks/es/: the Spanish cell is the same code)."""
    import shutil
    import subprocess
    import sys

    import nbformat

    repo = Path(__file__).resolve().parents[1]
    imported = tmp_path / "kinesis-lab"
    for part in ("notebooks", "src", "databricks", "aws-policy"):
        shutil.copytree(repo / part, imported / part, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(repo / "pyproject.toml", imported)
    [notebook] = (imported / "notebooks" / edition).glob(f"{number}_*.ipynb")
    cells = nbformat.read(notebook, as_version=4).cells
    parameters = next(c.source for c in cells if "parameters" in c.metadata.get("tags", []))
    [setup] = [c.source for c in cells if SETUP_MARK in c.source]
    check = "\nprint(dbr.__file__, IN_DATABRICKS, catalog, load_config().home)"
    env = {"PATH": os.environ.get("PATH", ""), "DATABRICKS_RUNTIME_VERSION": "15.4"}
    # -S: no site-packages, so no installed kinesis_lab (nor pandas): only what the repository holds
    done = subprocess.run([sys.executable, "-S", "-c", PRELUDE + parameters + "\n" + setup + check],
                          cwd=notebook.parent, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    package, in_databricks, catalog, home = done.stdout.split()
    assert Path(package) == imported / "src" / "kinesis_lab" / "course" / "databricks_runtime.py"
    assert (in_databricks, catalog, Path(home)) == ("True", "kinesis_lab", imported)
