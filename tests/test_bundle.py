"""The Declarative Automation Bundle in databricks/ (formerly Databricks Asset Bundle).

`databricks bundle validate` needs a workspace login; offline, every resource is loaded with the resource
classes of `databricks-bundles` (Databricks' Python support for bundles), which reject a misspelled or
unknown field; `${...}` references are plain text to YAML, so they are checked here by pattern."""

from __future__ import annotations

import copy
import glob
import re
from pathlib import Path

import nbformat
import pytest
import yaml
from databricks.bundles.jobs import Job
from databricks.bundles.pipelines import Pipeline

from kinesis_lab.cloud import uc
from kinesis_lab.cloud.config import LAYER_SCHEMAS, LabConfig, schema_of

REPO = Path(__file__).resolve().parents[1]
BUNDLE_ROOT = REPO / "databricks"
TRANSFORMATIONS = BUNDLE_ROOT / "pipeline" / "transformations"
REFERENCE = re.compile(r"\$\{([^}]+)\}")
ALLOWED_NAMESPACES = {"var", "bundle", "workspace", "resources"}
SOURCE_MODES = {"autoloader", "files"}
RESOURCE_CLASSES = {"pipelines": Pipeline, "jobs": Job}


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


@pytest.fixture(scope="module")
def bundle() -> dict:
    return load(BUNDLE_ROOT / "databricks.yml")


@pytest.fixture(scope="module")
def resource_files(bundle) -> dict[Path, dict]:
    files = {}
    for pattern in bundle["include"]:
        for match in sorted(glob.glob(str(BUNDLE_ROOT / pattern))):
            files[Path(match)] = load(Path(match))
    return files


@pytest.fixture(scope="module")
def pipeline(resource_files) -> tuple[Path, dict]:
    found = [
        (path, p)
        for path, doc in resource_files.items()
        for p in doc.get("resources", {}).get("pipelines", {}).values()
    ]
    assert len(found) == 1, found
    return found[0]


def references(node) -> list[str]:
    if isinstance(node, dict):
        return [r for k, v in node.items() for r in references(k) + references(v)]
    if isinstance(node, list):
        return [r for v in node for r in references(v)]
    return REFERENCE.findall(node) if isinstance(node, str) else []


def test_bundle_basics(bundle):
    assert set(bundle) == {"bundle", "include", "variables", "targets"}
    assert bundle["bundle"] == {"name": "kinesis_lab"}
    assert bundle["include"] == ["resources/*.yml"]


def test_every_include_matches_a_file(bundle, resource_files):
    for pattern in bundle["include"]:
        assert glob.glob(str(BUNDLE_ROOT / pattern)), f"include {pattern!r} matches nothing"
    assert {p.name for p in resource_files} == {"kinesis_lab_pipeline.yml", "kinesis_lab_job.yml"}


def test_every_resource_loads_with_the_databricks_bundles_classes(resource_files):
    loaded = {}
    for path, doc in resource_files.items():
        assert set(doc) == {"resources"}, path.name
        for kind, resources in doc["resources"].items():
            assert kind in RESOURCE_CLASSES, f"{path.name}: resource type {kind}"
            for key, definition in resources.items():
                loaded[key] = RESOURCE_CLASSES[kind].from_dict(definition)  # ValueError on an unknown field
    assert set(loaded) == {"kinesis_lab_pipeline", "kinesis_lab_refresh"}
    assert isinstance(loaded["kinesis_lab_pipeline"], Pipeline) and loaded["kinesis_lab_pipeline"].serverless is True


def test_a_misspelled_field_fails_validation(pipeline, resource_files):
    _, p = pipeline
    misspelled = copy.deepcopy(p)
    misspelled["serverles"] = misspelled.pop("serverless")
    with pytest.raises(ValueError, match="Unexpected field 'serverles' for class Pipeline"):
        Pipeline.from_dict(misspelled)
    nested = copy.deepcopy(p)
    nested["libraries"][0]["glob"]["includes"] = nested["libraries"][0]["glob"].pop("include")
    with pytest.raises(ValueError, match="Unexpected field 'includes' for class PathPattern"):
        Pipeline.from_dict(nested)
    [job] = [j for doc in resource_files.values() for j in doc["resources"].get("jobs", {}).values()]
    bad_job = copy.deepcopy(job)
    bad_job["tasks"][0]["pipeline_task"]["pipelineid"] = bad_job["tasks"][0]["pipeline_task"].pop("pipeline_id")
    with pytest.raises(ValueError, match="Unexpected field 'pipelineid' for class PipelineTask"):
        Job.from_dict(bad_job)


def test_targets_dev_default_and_prod(bundle):
    targets = bundle["targets"]
    assert set(targets) == {"dev", "prod"}
    assert targets["dev"]["mode"] == "development" and targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production" and not targets["prod"].get("default")
    assert targets["prod"]["workspace"]["root_path"].startswith("/Workspace/")
    for name, target in targets.items():
        assert set(target) <= {"mode", "default", "variables", "workspace"} | ({"resources"} if name == "dev" else set()), name
        assert set(target.get("variables", {})) <= set(bundle["variables"]), name


def catalog_of(bundle: dict, target: str) -> str:
    """The catalog a target deploys to: its own variable value, else the variable's default."""
    return bundle["targets"][target].get("variables", {}).get("catalog", bundle["variables"]["catalog"]["default"])


def published_tables() -> set[str]:
    """The qualified names the transformations publish (tables and materialized views, not temporary views)."""
    names = set()
    for path in TRANSFORMATIONS.glob("*.py"):
        text = path.read_text()
        names |= set(re.findall(r"@dp\.(?:table|materialized_view)\(\s*name=\"([\w.]+)\"", text))
        names |= {f"gold.{name}" for name in re.findall(r"^gold_view\(\"(\w+)\"", text, flags=re.M)}  # 03_gold.py
    return names


def test_dev_and_prod_never_publish_into_the_same_tables(bundle, pipeline):
    _, p = pipeline
    assert p["catalog"] == "${var.catalog}"
    tables = {target: {f"{catalog_of(bundle, target)}.{name}" for name in published_tables()}
              for target in bundle["targets"]}
    assert len(tables["dev"]) == len(published_tables()) == 8
    assert not tables["dev"] & tables["prod"]
    assert catalog_of(bundle, "dev") == LabConfig(home=REPO).catalog  # what notebooks 06-09 use by default


def test_every_part_names_the_same_schemas(pipeline):
    # the pipeline: each table in its layer's schema, every layer used, reads by the same names
    published = published_tables()
    assert {name.split(".")[0] for name in published} == set(LAYER_SCHEMAS)
    assert all(name.count(".") == 1 and schema_of(name.split(".")[1]) == name.split(".")[0] for name in published)
    source = "\n".join(p.read_text() for p in TRANSFORMATIONS.glob("*.py"))
    for table in re.findall(r"\.table\(\"([\w.]+)\"\)", source):
        assert table in published or table == "silver_checked", table  # the temporary view is unqualified
    # the bundle's default schema and the local spec's database are layers too
    assert pipeline[1]["schema"] in LAYER_SCHEMAS
    assert load(BUNDLE_ROOT / "pipeline" / "spark-pipeline.yml")["database"] == pipeline[1]["schema"]
    # the SQL: 01 creates exactly the layer schemas, 03 reads every table from its layer's schema
    created = re.findall(r"CREATE SCHEMA IF NOT EXISTS `kinesis_lab`\.`(\w+)`",
                         uc.render_sql("01_catalog_and_schemas", catalog="kinesis_lab", managed_location=None))
    assert created == list(LAYER_SCHEMAS)
    explored = re.findall(r"`kinesis_lab`\.`(\w+)`\.`(\w+)`",
                          uc.render_sql("03_explore_pipeline_tables", catalog="kinesis_lab"))
    assert {f"{schema}.{table}" for schema, table in explored} == published
    # notebooks 07-09 read every table through dbr.table_reader (config.qualified_name), naming no schema themselves
    for notebook in sorted((REPO / "notebooks").glob("0[789]_*.ipynb")):
        code = "\n".join(c.source for c in nbformat.read(notebook, as_version=4).cells if c.cell_type == "code")
        assert "load_table = dbr.table_reader(cfg, spark if IN_DATABRICKS else None)" in code, notebook.name
        assert not re.search(r"spark\.(table|sql)\(", code), notebook.name


def test_variables_declared_and_defaults_match_the_lab_config(bundle):
    variables = bundle["variables"]
    assert set(variables) == {"catalog", "bucket", "source_prefix"}
    assert all(v.get("description") for v in variables.values())
    cfg = LabConfig(home=REPO)
    assert variables["catalog"]["default"] == cfg.catalog
    # the pipeline reads where Firehose writes: the static start of the delivery stream's Prefix
    assert cfg.s3_prefix.startswith(variables["source_prefix"]["default"])
    assert variables["source_prefix"]["default"].endswith("/")
    # the bucket name contains the account id: it must be passed, never defaulted
    assert "default" not in variables["bucket"]


def test_every_reference_is_declared(bundle, resource_files):
    declared_vars = set(bundle["variables"])
    pipelines = {k for doc in resource_files.values() for k in doc["resources"].get("pipelines", {})}
    jobs = {k for doc in resource_files.values() for k in doc["resources"].get("jobs", {})}
    for where, doc in [(BUNDLE_ROOT / "databricks.yml", bundle), *resource_files.items()]:
        for ref in references(doc):
            namespace, _, rest = ref.partition(".")
            assert namespace in ALLOWED_NAMESPACES, f"{where.name}: ${{{ref}}}"
            if namespace == "var":
                assert rest in declared_vars, f"{where.name}: ${{{ref}}} is not declared in variables"
            if namespace == "resources":
                kind, key, _field = rest.split(".")
                assert key in {"pipelines": pipelines, "jobs": jobs}[kind], f"{where.name}: ${{{ref}}}"


def test_pipeline_settings(pipeline):
    _, p = pipeline
    assert p["serverless"] is True and "clusters" not in p  # serverless: no cluster spec
    assert p["configuration"]["lab.source_mode"] in SOURCE_MODES
    assert p["configuration"]["lab.source_path"] == "s3://${var.bucket}/${var.source_prefix}"


def test_pipeline_paths_resolve_relative_to_the_yml(pipeline):
    path, p = pipeline
    root = (path.parent / p["root_path"]).resolve()
    assert root == (BUNDLE_ROOT / "pipeline").resolve() and root.is_dir()
    assert (root / "medallion.py").is_file()  # importable from transformations: the root goes on sys.path
    [library] = p["libraries"]
    include = library["glob"]["include"]
    assert (path.parent / include).resolve().as_posix().startswith(root.as_posix() + "/transformations")


def test_pipeline_glob_matches_the_transformations(pipeline):
    path, p = pipeline
    include = p["libraries"][0]["glob"]["include"]
    matched = sorted(
        Path(f) for f in glob.glob(str(path.parent / include), recursive=True) if Path(f).is_file()
    )
    python_files = [f for f in matched if f.suffix == ".py"]
    assert len(python_files) >= 3, (
        f"{include} matches {[f.name for f in matched]}: expected bronze/silver/gold files"
    )
    source = "\n".join(f.read_text() for f in python_files)
    # the pipeline's configuration keys are the ones its code reads
    for key in p["configuration"]:
        assert key in source, f"{key} is set in the bundle but no transformation reads it"


def test_job_runs_the_pipeline_with_a_paused_schedule(resource_files, pipeline):
    jobs = [j for doc in resource_files.values() for j in doc["resources"].get("jobs", {}).values()]
    [job] = jobs
    [task] = job["tasks"]
    pipelines = {k for doc in resource_files.values() for k in doc["resources"].get("pipelines", {})}
    ref = REFERENCE.fullmatch(task["pipeline_task"]["pipeline_id"]).group(1)
    assert ref.startswith("resources.pipelines.") and ref.endswith(".id")
    assert ref.split(".")[2] in pipelines
    assert job["schedule"]["pause_status"] == "PAUSED"
    assert len(job["schedule"]["quartz_cron_expression"].split()) in (6, 7)  # Quartz: seconds first
