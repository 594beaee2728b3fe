"""The notebooks' ```bash blocks, typed as printed: every block of every notebook, in notebook order, run by bash
with a real AWS CLI v2 (Debian's package: 2.9.19 on CI, the oldest release the blocks support) against a private
local stack, from a folder laid out as the repository root (`.venv`, `data/`, `.lab/` = the stack's state folder,
`build/`). Two orders: "CLI only" (no cell runs) and "cells then CLI" (each notebook's cells with papermill, then
its blocks: a block re-run after its cell must find what the cell made and keep it).

Blocks that need Spark (07's `kinesis-lab pipeline`) run only with LAB_CLI_BLOCKS_SPARK=1: the command is the
pipeline cells' code, tested by tests/test_local_pipeline.py; here it would add a Spark server's start per order.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import boto3
import nbformat
import papermill
import pytest

from kinesis_lab.local import stack

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))  # 00 ... 09, 99: the series' order
BASH = re.compile(r"```bash\n(.*?)```", re.S)
REGION = "us-east-1"
BUCKET = "jm-demo-s3-lab-123456789012-us-east-1"
SPARK = "kinesis-lab pipeline"
CELLS_RUN = ("00", "01", "02", "03", "04", "05", "99")  # 06-09: Databricks stand-ins and Spark (other tests)


def aws_cli_v2() -> str | None:
    """A real AWS CLI v2 (``aws --version`` says aws-cli/2.): $LAB_AWS_CLI, Debian's /usr/bin/aws, or on PATH."""
    for candidate in (os.environ.get("LAB_AWS_CLI"), "/usr/bin/aws", shutil.which("aws")):
        if not candidate or not Path(candidate).is_file():
            continue
        try:
            version = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=60).stdout
        except (OSError, subprocess.TimeoutExpired):
            continue
        if version.startswith("aws-cli/2."):
            return candidate
    return None


@pytest.fixture(scope="module")
def aws_cli():
    found = aws_cli_v2()
    if found is None:
        message = "no AWS CLI v2 here (`apt-get install -y awscli` gives 2.9.19; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found


def blocks(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    found = [b for c in nb.cells if c.cell_type == "markdown" for b in BASH.findall(c.source)]
    if os.environ.get("LAB_CLI_BLOCKS_SPARK") != "1":
        found = [b for b in found if SPARK not in b]
    return found


def test_every_notebook_but_08_and_09_has_blocks():
    assert {n.name[:2] for n in NOTEBOOKS if any(BASH.findall(c.source) for c in nbformat.read(
        n, as_version=4).cells if c.cell_type == "markdown")} == {"00", "01", "02", "03", "04", "05", "06", "07", "99"}


@pytest.fixture
def root(tmp_path, private_stacks, aws_cli, monkeypatch):
    """A folder laid out as the repository root, the environment a learner's terminal has (the CLI v2 first on
    PATH, no AWS settings of this machine), and this process pointed at the same (private) stack."""
    folder = tmp_path / "repo"
    folder.mkdir()
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "data").symlink_to(REPO / "data")
    state_dir = private_stacks(folder / ".lab")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "aws").symlink_to(aws_cli)
    for key in list(os.environ):
        if key.startswith(("AWS_", "LAB_")):
            monkeypatch.delenv(key)
    for key, value in {"LAB_STATE_DIR": str(state_dir), "LAB_BUILD_DIR": str(folder / "build"),
                       "LAB_TARGET": "local", "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
                       "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"), "AWS_PAGER": "",
                       "PATH": os.pathsep.join([str(tools), os.environ["PATH"]])}.items():
        monkeypatch.setenv(key, value)
    yield folder
    stack.down(state_dir)


def run_bash(root: Path, parts: list[tuple[str, str]]) -> str:
    """One bash session running the blocks in order (``set -eo pipefail``: the first failing line stops it)."""
    script = "set -eo pipefail\n" + "".join(f"echo '### {name}'\n{block}\n" for name, block in parts)
    done = subprocess.run(["bash", "-c", script], cwd=root, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    started = [line for line in done.stdout.splitlines() if line.startswith("### ")]
    assert done.returncode == 0, f"failed in {started[-1] if started else '?'}:\n{output[-4000:]}"
    return output


def named_blocks(notebook: Path) -> list[tuple[str, str]]:
    return [(f"{notebook.stem} block {i + 1}", b) for i, b in enumerate(blocks(notebook))]


def run_cells(notebook: Path, out_dir: Path) -> None:
    out_dir.mkdir(exist_ok=True)
    papermill.execute_notebook(str(notebook), str(out_dir / notebook.name), cwd=str(notebook.parent),
                               progress_bar=False, kernel_name="python3")


def lab_resources() -> dict:
    """What of the lab exists on the stack (this process reaches it through the state folder's env file)."""
    endpoint = stack.read_state(Path(os.environ["LAB_STATE_DIR"])).endpoint
    keys = {"region_name": REGION, "endpoint_url": endpoint, "aws_access_key_id": "testing",
            "aws_secret_access_key": "testing"}
    iam, s3 = boto3.client("iam", **keys), boto3.client("s3", **keys)
    return {
        "roles": sorted(r["RoleName"] for r in iam.list_roles()["Roles"]),
        "buckets": sorted(b["Name"] for b in s3.list_buckets().get("Buckets", [])),
        "streams": sorted(boto3.client("kinesis", **keys).list_streams()["StreamNames"]),
        "delivery_streams": boto3.client("firehose", **keys).list_delivery_streams()["DeliveryStreamNames"],
        "log_groups": [g["logGroupName"] for g in boto3.client("logs", **keys).describe_log_groups()["logGroups"]],
    }


def test_cli_only(root):
    before_99 = [p for n in NOTEBOOKS if not n.name.startswith("99") for p in named_blocks(n)]
    output = run_bash(root, before_99 + [("check", "echo '### resources'")])
    assert "aws-cli/2." in output
    made = lab_resources()
    assert made["roles"] == ["DatabricksUCRoleKinesisLab", "FirehoseToS3Role"] and made["buckets"] == [BUCKET]
    assert made["streams"] == ["jm-demo-kinesis-lab"] and made["delivery_streams"] == ["salud-firehose-tos3"]
    summary = json.loads((root / "build" / "run-summary.json").read_text())
    assert summary["records_sent"] == 540  # kinesis-lab produce recorded the run
    teardown = [p for n in NOTEBOOKS if n.name.startswith("99") for p in named_blocks(n)]
    run_bash(root, named_blocks(NOTEBOOKS[0]) + teardown)
    assert lab_resources() == {"roles": [], "buckets": [], "streams": [], "delivery_streams": [], "log_groups": []}


def test_cells_then_cli(root, tmp_path):
    setup = named_blocks(NOTEBOOKS[0])  # each bash session starts with 00's block, as a new terminal would
    for notebook in NOTEBOOKS:
        if notebook.name[:2] in CELLS_RUN:
            run_cells(notebook, tmp_path / "executed")
        if notebook.name[:2] != "00" and blocks(notebook):
            run_bash(root, setup + named_blocks(notebook))
    # 99's cells stopped the stack and deleted everything; its block then started an empty one, found nothing
    assert lab_resources() == {"roles": [], "buckets": [], "streams": [], "delivery_streams": [], "log_groups": []}
