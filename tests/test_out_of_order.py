"""A notebook opened out of order stops at once with one line naming the notebook to run (papermill, own stack)."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from kinesis_lab.local import stack

REPO = Path(__file__).resolve().parents[1]
REGION = "us-east-1"
BUCKET = "jm-demo-s3-lab-123456789012-us-east-1"
pytestmark = pytest.mark.notebooks  # every test runs a notebook in a kernel: make test-notebooks


@pytest.fixture
def fresh_stack(private_stack_dir, tmp_path, monkeypatch):
    state, _ = stack.up(private_stack_dir, REGION)
    for key, value in {**stack.local_env(state.endpoint, REGION), "LAB_STATE_DIR": str(private_stack_dir),
                       "LAB_BUILD_DIR": str(tmp_path / "build"), "LAB_TARGET": "local"}.items():
        monkeypatch.setenv(key, value)
    for key in ("LAB_REGION", "LAB_AWS_ENDPOINT_URL", "LAB_BUCKET", "LAB_STREAM_NAME", "LAB_DELIVERY_STREAM_NAME"):
        monkeypatch.delenv(key, raising=False)
    return state


def failure(tmp_path, number: str) -> tuple[papermill.PapermillExecutionError, list]:
    [path] = (REPO / "notebooks").glob(f"{number}_*.ipynb")
    out = tmp_path / path.name
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(path), str(out), cwd=str(path.parent), progress_bar=False,
                                   kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    return err.value, errors


@pytest.mark.parametrize(("number", "message"), [
    ("05", f"bucket {BUCKET} does not exist: run 01_iam_role_and_bucket first"),
    ("04", "stream jm-demo-kinesis-lab does not exist: run 02_kinesis_stream first"),
    ("06", f"bucket {BUCKET} does not exist: run 01_iam_role_and_bucket first"),
])  # fmt: skip
def test_a_notebook_on_a_fresh_stack_stops_with_one_line(fresh_stack, tmp_path, number, message):
    err, errors = failure(tmp_path, number)
    assert (err.ename, err.evalue) == ("MissingPrerequisite", message)
    assert [e["traceback"] for e in errors] == [[f"MissingPrerequisite: {message}"]]  # no traceback


def test_05_names_04_when_nothing_was_sent(fresh_stack, tmp_path):
    import boto3

    from kinesis_lab.cloud.config import load_config
    from kinesis_lab.course.prerequisites import MissingPrerequisite, require

    cfg = load_config(target="local")
    boto3.client("s3", region_name=REGION).create_bucket(Bucket=BUCKET)
    kinesis = boto3.client("kinesis", region_name=REGION)
    kinesis.create_stream(StreamName=cfg.stream_name, StreamModeDetails={"StreamMode": "ON_DEMAND"})

    class Lab:
        bucket = BUCKET

    require(cfg, Lab, "bucket", "stream")
    with pytest.raises(MissingPrerequisite) as missing:
        require(cfg, Lab, "records_sent", "bucket", "delivery_stream")  # checked in series order
    assert str(missing.value) == "delivery stream salud-firehose-tos3 does not exist: run 03_firehose_delivery_stream first"


def test_99_lists_a_demo_stream_it_could_not_delete(fresh_stack, tmp_path):
    """An endpoint that dropped 04's demo stream's tags (or a run stopped between create and tag) leaves an untagged
    stream of the lab's name: 99 keeps it (not provably the lab's) and says so, never "nothing of the lab is left"."""
    import boto3

    boto3.client("kinesis", region_name=REGION).create_stream(StreamName="jm-demo-kinesis-lab-demo",
                                                              StreamModeDetails={"StreamMode": "ON_DEMAND"})
    [path] = (REPO / "notebooks").glob("99_*.ipynb")
    papermill.execute_notebook(str(path), str(tmp_path / path.name), cwd=str(path.parent), progress_bar=False,
                               kernel_name="python3", parameters={"stop_local_stack": False})
    nb = nbformat.read(tmp_path / path.name, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "left alone: Kinesis stream jm-demo-kinesis-lab-demo (kept: not tagged as this lab's)" in text
    assert "nothing of the lab is left" not in text and "nothing else of the lab is left" in text
