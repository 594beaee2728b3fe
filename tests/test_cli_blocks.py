"""The notebooks' ```bash blocks, typed as printed: every block of every notebook, in notebook order, run by bash
with a real AWS CLI v2 (Debian's package: 2.9.19 on CI, the oldest release the blocks support) against a private
local stack, from a folder laid out as the repository root (`.venv`, `data/`, `.lab/` = the stack's state folder,
`build/`). Two orders: "CLI only" (no cell runs) and "cells then CLI" (each notebook's cells with papermill, then
its blocks: a block re-run after its cell must find what the cell made and keep it).

Blocks that need Spark (07's `kinesis-lab pipeline`) run only with LAB_CLI_BLOCKS_SPARK=1: the command is the
pipeline cells' code, tested by tests/test_local_pipeline.py; here it would add a Spark server's start per order.
Without them nothing here uses Spark, so both terminals have KINESIS_LAB_WARM_UP=0: 00's background Spark server would
start and be torn down by 99 unused (~20 s of CPU). nbval and the demo run 00 with the warm-up, and 07 then uses it.
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
import pytest

from kinesis_lab.local import stack
from kinesis_lab.local.pipeline.warmup import WARM_UP_ENV

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]  # notebooks 00-05 and 99 run (cells then CLI); ~2.5 min

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


def spark_blocks() -> bool:
    return os.environ.get("LAB_CLI_BLOCKS_SPARK") == "1"


def blocks(notebook: Path) -> list[str]:
    nb = nbformat.read(notebook, as_version=4)
    found = [b for c in nb.cells if c.cell_type == "markdown" for b in BASH.findall(c.source)]
    if not spark_blocks():
        found = [b for b in found if SPARK not in b]
    return found


def test_every_notebook_but_08_and_09_has_blocks():
    assert {n.name[:2] for n in NOTEBOOKS if any(BASH.findall(c.source) for c in nbformat.read(
        n, as_version=4).cells if c.cell_type == "markdown")} == {"00", "01", "02", "03", "04", "05", "06", "07", "99"}


def make_root(tmp_path: Path, name: str, private_stacks, aws_cli: str) -> tuple[Path, dict[str, str]]:
    """A folder laid out as the repository root, and the environment a learner's terminal has there: the CLI v2
    first on PATH, none of this machine's AWS settings, the folder's own stack (``.lab``) and build folder."""
    folder = tmp_path / name
    folder.mkdir()
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "data").symlink_to(REPO / "data")
    state_dir = private_stacks(folder / ".lab")
    tools = tmp_path / f"{name}-bin"
    tools.mkdir()
    (tools / "aws").symlink_to(aws_cli)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LAB_"))}
    env.update({"LAB_STATE_DIR": str(state_dir), "LAB_BUILD_DIR": str(folder / "build"), "LAB_TARGET": "local",
                "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_PAGER": "",
                "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
                "PATH": os.pathsep.join([str(tools), os.environ["PATH"]])})
    if not spark_blocks():
        env[WARM_UP_ENV] = "0"  # no Spark here (see the module's docstring)
    return folder, env


def script(parts: list[tuple[str, str]]) -> str:
    """One bash session running ``parts`` in order (``set -eo pipefail``: the first failing line stops it)."""
    return "set -eo pipefail\n" + "".join(f"echo '### {name}'\n{block}\n" for name, block in parts)


def start(root: Path, env: dict[str, str], parts: list[tuple[str, str]], log: Path) -> subprocess.Popen:
    with log.open("w") as out:
        return subprocess.Popen(["bash", "-c", script(parts)], cwd=root, env=env, stdout=out,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def finish(proc: subprocess.Popen, log: Path, order: str) -> str:
    try:
        proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    output = log.read_text()
    started = [line for line in output.splitlines() if line.startswith("### ")]
    assert proc.returncode == 0, f"{order}: failed in {started[-1] if started else '?'}:\n{output[-4000:]}"
    return output


def named_blocks(notebook: Path) -> list[tuple[str, str]]:
    return [(f"{notebook.stem} block {i + 1}", b) for i, b in enumerate(blocks(notebook))]


def cells(notebook: Path) -> tuple[str, str]:
    """Run a notebook's cells from the terminal, with papermill (the kernel inherits the terminal's environment)."""
    out = f"build/executed/{notebook.name}"
    return (f"{notebook.stem} cells", f"mkdir -p build/executed\n{sys.executable} -m papermill --cwd {REPO / 'notebooks'} -k "
            f"python3 --no-progress-bar --log-level WARNING {notebook} {out}")


def lab_resources(state_dir: Path) -> dict:
    """What of the lab exists on the stack of ``state_dir``."""
    endpoint = stack.read_state(state_dir).endpoint
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


NOTHING = {"roles": [], "buckets": [], "streams": [], "delivery_streams": [], "log_groups": []}


def test_every_block_in_both_orders(tmp_path, private_stacks, aws_cli):
    """Both orders at once, each on its own stack (CLI only spends most of its time waiting for 03's 60 s
    buffering interval). CLI only: every block of 00-07, then a check of what they made, then 99's. Cells then
    CLI: each notebook's cells, then its blocks, in one terminal."""
    cli_root, cli_env = make_root(tmp_path, "cli-only", private_stacks, aws_cli)
    both_root, both_env = make_root(tmp_path, "cells-then-cli", private_stacks, aws_cli)
    before_99 = [p for n in NOTEBOOKS if not n.name.startswith("99") for p in named_blocks(n)]
    teardown = [p for n in NOTEBOOKS if n.name.startswith("99") for p in named_blocks(n)]
    check = "echo 'the blocks of 00-07 ran'"
    cli_only = start(cli_root, cli_env, [*before_99, ("made", check)], tmp_path / "cli-only.log")

    ordered = []
    for notebook in NOTEBOOKS:
        if notebook.name[:2] in CELLS_RUN:
            ordered.append(cells(notebook))
        ordered += named_blocks(notebook)
    both = start(both_root, both_env, ordered, tmp_path / "cells-then-cli.log")

    output = finish(cli_only, tmp_path / "cli-only.log", "CLI only")
    assert "aws-cli/2." in output
    made = lab_resources(Path(cli_env["LAB_STATE_DIR"]))
    assert made["roles"] == ["DatabricksUCRoleKinesisLab", "FirehoseToS3Role"] and made["buckets"] == [BUCKET]
    assert made["streams"] == ["jm-demo-kinesis-lab"] and made["delivery_streams"] == ["salud-firehose-tos3"]
    assert json.loads((cli_root / "build" / "run-summary.json").read_text())["records_sent"] == 540
    finish(start(cli_root, cli_env, named_blocks(NOTEBOOKS[0]) + teardown, tmp_path / "cli-99.log"),
           tmp_path / "cli-99.log", "CLI only, 99")
    assert lab_resources(Path(cli_env["LAB_STATE_DIR"])) == NOTHING

    output = finish(both, tmp_path / "cells-then-cli.log", "cells then CLI")
    # 99's cells stopped the stack and deleted everything; its block then started an empty one and found nothing
    assert lab_resources(Path(both_env["LAB_STATE_DIR"])) == NOTHING
    for name in ("cli-only", "cells-then-cli"):
        stack.down(Path(tmp_path / name / ".lab"))


def test_the_original_delivery_json_is_refused_through_the_cli(private_stack_dir, aws_cli, tmp_path):
    """The original course's `aws firehose create-delivery-stream --cli-input-json file://delivery.json`, as its
    README types it: refused at create, as on AWS, saying what to fix."""
    state, _ = stack.up(private_stack_dir, REGION)
    env = {"PATH": os.environ["PATH"], "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": REGION, "AWS_PAGER": "", "AWS_CONFIG_FILE": str(tmp_path / "none"),
           "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    aws = [aws_cli, "--endpoint-url", state.endpoint]
    subprocess.run([*aws, "kinesis", "create-stream", "--stream-name", "jm-demo-kinesis-lab", "--stream-mode-details",
                    "StreamMode=ON_DEMAND"], env=env, check=True, capture_output=True, timeout=120)
    done = subprocess.run([*aws, "firehose", "create-delivery-stream", "--cli-input-json",
                           f"file://{REPO / 'tests' / 'original_course' / 'delivery.json'}"],
                          env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode != 0
    assert ("An error occurred (InvalidArgumentException) when calling the CreateDeliveryStream operation: "
            "ErrorOutputPrefix: '!{firehose:error-output-type/' at position 7 is never closed: add the missing '}'"
            ) in done.stderr
