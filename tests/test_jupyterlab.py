"""`make lab` / `kinesis-lab lab`: JupyterLab on the repository root, and every image the notebooks show is served."""

from __future__ import annotations

import json
import os
import posixpath
import re
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from kinesis_lab.course import cli
from kinesis_lab.local import stack

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*(?:<([^>]+)>|([^)\s]+))(?:\s+[\"'][^\"']*[\"'])?\s*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.IGNORECASE)
START_DEADLINE = 240  # seconds: a first start builds JupyterLab's caches, slow on a loaded CI machine


class Exec(Exception):
    """Raised instead of replacing the test process with JupyterLab."""


JUPYTERLAB_MISSING = "JupyterLab is not installed: pip install -e '.[dev]' (or '.[lab]')"


@pytest.fixture
def captured_exec(monkeypatch):
    pytest.importorskip("jupyterlab", reason=JUPYTERLAB_MISSING)

    def fake_execve(path, argv, env):
        raise Exec(path, argv, env)

    monkeypatch.setattr(cli.os, "execve", fake_execve)


def image_refs(markdown: str) -> list[str]:
    return [a or b for a, b in MD_IMAGE.findall(markdown)] + HTML_IMAGE.findall(markdown)


def test_image_refs_finds_markdown_and_html_images():
    md = '![a](../images/x.png) text ![b](<../images/y z.png> "t") <img alt="c" src="../images/z.png" width=300>'
    assert image_refs(md) == ["../images/x.png", "../images/y z.png", "../images/z.png"]


def test_lab_command_serves_the_repo_root_and_opens_the_first_notebook(monkeypatch):
    monkeypatch.setattr(cli.os, "geteuid", lambda: 1000, raising=False)
    cmd = cli.jupyter_lab_command(REPO, ["--no-browser"])
    assert cmd[:3] == [sys.executable, "-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={REPO}" in cmd and "--allow-root" not in cmd
    assert cmd[-2:] == ["--no-browser", str(REPO / "notebooks" / "00_setup.ipynb")]
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0, raising=False)
    assert "--allow-root" in cli.jupyter_lab_command(REPO)  # containers, WSL, cloud VMs


@pytest.mark.skipif(os.name != "posix", reason="kinesis-lab lab execs JupyterLab on POSIX only")
def test_lab_on_aws_starts_no_local_stack(tmp_path, monkeypatch, captured_exec):
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)

    def no_stack(*a, **k):
        raise AssertionError("the local stack must not start on target aws")

    monkeypatch.setattr(stack, "up", no_stack)
    with pytest.raises(Exec) as exc:
        cli.main(["lab", "--target", "aws", "--no-browser"])
    path, argv, env = exc.value.args
    assert argv == cli.jupyter_lab_command(REPO, ["--no-browser"]) and path == argv[0]
    assert "AWS_ENDPOINT_URL" not in env
    assert not (tmp_path / "state").exists()


@pytest.mark.skipif(os.name != "posix", reason="kinesis-lab lab execs JupyterLab on POSIX only")
def test_lab_on_local_starts_the_stack_and_hands_its_env_to_jupyterlab(private_stack_dir, monkeypatch, captured_exec):
    state_dir = private_stack_dir
    monkeypatch.setenv("LAB_STATE_DIR", str(state_dir))
    monkeypatch.delenv("LAB_TARGET", raising=False)
    try:
        with pytest.raises(Exec) as exc:
            cli.main(["lab", "--no-browser"])
        _, argv, env = exc.value.args
        state = stack.read_state(state_dir)
        assert state is not None and stack.status(state_dir)["up"]
        assert env["AWS_ENDPOINT_URL"] == state.endpoint  # what .lab/local.env says
        assert env["AWS_ACCESS_KEY_ID"] == "testing"
        assert argv[-2:] == ["--no-browser", str(REPO / "notebooks" / "00_setup.ipynb")]
        assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)  # terminals: kinesis-lab
    finally:
        stack.down(state_dir)


def _get(url: str, token: str, timeout: float = 30) -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


@pytest.fixture
def jupyterlab(tmp_path):
    """JupyterLab started as `make lab` starts it (`kinesis-lab lab`), without the stack or a browser."""
    pytest.importorskip("jupyterlab", reason=JUPYTERLAB_MISSING)
    if os.name != "posix":
        pytest.skip("the test stops JupyterLab by its process group (POSIX)")
    port, token = stack.free_port(), secrets.token_hex(16)
    runtime = tmp_path / "runtime"
    env = {**os.environ, "LAB_STATE_DIR": str(tmp_path / "state"), "JUPYTER_RUNTIME_DIR": str(runtime),
           "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_DATA_DIR": str(tmp_path / "data"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "ws")}
    log = tmp_path / "jupyterlab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "kinesis_lab.course.cli", "lab", "--no-stack", "--no-browser", f"--port={port}",
             "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}"],
            cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_DEADLINE
        while True:
            try:
                if _get(f"{base}/api/status", token, timeout=5)[0] == 200:
                    break
            except (urllib.error.URLError, OSError):
                pass
            assert proc.poll() is None, f"JupyterLab exited ({proc.returncode}):\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"JupyterLab did not answer in {START_DEADLINE} s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield base, token, runtime
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.poll() is not None


@pytest.mark.notebooks  # a real JupyterLab: make test-notebooks
def test_the_printed_url_opens_00_not_the_launcher(jupyterlab, tmp_path):
    base, token, _ = jupyterlab
    printed = (tmp_path / "jupyterlab.log").read_text()
    assert f"{base}/lab/tree/notebooks/00_setup.ipynb?token=" in printed, printed[-2000:]  # (a given token: "...")
    status, kind, _ = _get(f"{base}/lab/tree/notebooks/00_setup.ipynb", token)
    assert status == 200 and kind.startswith("text/html")


@pytest.mark.notebooks  # a real JupyterLab: make test-notebooks
def test_jupyterlab_serves_every_image_of_every_notebook(jupyterlab):
    base, token, runtime = jupyterlab
    # the server's root is the repository: the notebooks sit in notebooks/, next to images/
    status, _, body = _get(f"{base}/api/contents/notebooks?content=1", token)
    assert status == 200, body[:300]
    served = sorted(item["path"] for item in json.loads(body)["content"] if item["type"] == "notebook")
    assert served == [f"notebooks/{p.name}" for p in NOTEBOOKS]
    # `make lab` opens the first notebook
    opener = list(runtime.glob("jpserver-file-to-run-*-open.html"))
    assert len(opener) == 1
    opened = re.search(r'content="\d+;url=([^"]+)"', opener[0].read_text()).group(1)
    assert urllib.parse.urlsplit(opened).path.endswith("lab/tree/notebooks/00_setup.ipynb"), opened

    checked = {}
    for nb_path in served:
        status, _, body = _get(f"{base}/api/contents/{urllib.parse.quote(nb_path)}?type=notebook&content=1", token)
        assert status == 200, f"{nb_path}: {status}"
        cells = json.loads(body)["content"]["cells"]
        for cell in (c for c in cells if c["cell_type"] == "markdown"):
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            for ref in image_refs(source):
                if re.match(r"^(https?:|data:|attachment:)", ref):
                    continue
                # JupyterLab resolves a relative URL against the notebook's folder, then fetches /files/<path>
                path = posixpath.normpath(posixpath.join(posixpath.dirname(nb_path), urllib.parse.unquote(ref)))
                assert not path.startswith("../"), f"{nb_path}: {ref} points outside the server root"
                status, ctype, data = _get(f"{base}/files/{urllib.parse.quote(path)}", token)
                assert status == 200, f"{nb_path}: {ref} -> /files/{path}: HTTP {status}"
                assert ctype.startswith("image/") and data, f"{nb_path}: {ref} -> {ctype!r}, {len(data)} bytes"
                checked.setdefault(nb_path, []).append(path)
    # not vacuous: every notebook shows its "you are here" figure
    assert sorted(checked) == served
    assert "images/you_are_here_00.png" in checked["notebooks/00_setup.ipynb"]


# --- notebooks as JupyterLab saves them (`make notebooks` runs sanitise_outputs) ----------------------------------

def _round_trip(path: Path) -> str:
    import io

    import nbformat

    out = io.StringIO()
    nbformat.write(nbformat.read(path, as_version=nbformat.NO_CONVERT), out)
    return out.getvalue()


def test_sanitised_notebook_is_what_jupyterlab_would_save(tmp_path):
    from ipykernel.kernelspec import get_kernel_dict

    from kinesis_lab.course.demo import normalise_notebook, sanitise_outputs

    home = "/home/learner/kinesis-lab"
    html = f"<table><tr><td>81.1 GB free in {home}</td></tr></table>"
    messy = {  # nbformat 4.4 (no cell ids), another kernel display name, a float the browser sends back as int
        "nbformat": 4, "nbformat_minor": 4,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (kinesis-lab)", "language": "python"},
                     "widgets": {"state": {"max": 540.0, "ratio": 0.5}}},
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# title\n![you are here](../images/x.png)"},
            {"cell_type": "code", "metadata": {}, "execution_count": 1, "source": "doctor()",
             "outputs": [{"output_type": "execute_result", "execution_count": 1, "metadata": {},
                          "data": {"text/plain": f"free in {home}", "text/html": html}},
                         {"output_type": "stream", "name": "stdout", "text": f"log: {home}/build/x.log\n"}]},
        ],
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(messy, indent=2), encoding="utf-8")  # no trailing newline, indent 2

    sanitise_outputs(path, Path(home))

    text = path.read_text(encoding="utf-8")
    assert text == _round_trip(path) and text.endswith("}\n")  # byte-identical through nbformat
    nb = json.loads(text)
    assert nb["nbformat_minor"] == 5 and all(c.get("id") for c in nb["cells"])
    assert nb["metadata"]["kernelspec"]["display_name"] == get_kernel_dict()["display_name"]
    assert nb["metadata"]["widgets"]["state"] == {"max": 540, "ratio": 0.5}
    assert '"max": 540,' in text
    # the repository path is gone, and its stand-in shows in HTML (no tag the browser swallows) and in text
    assert home not in text and "<repo>" not in text
    out = nb["cells"][1]["outputs"]
    assert "free in [repo]" in "".join(out[0]["data"]["text/html"])
    assert "".join(out[0]["data"]["text/plain"]) == "free in [repo]"
    assert "".join(out[1]["text"]) == "log: [repo]/build/x.log\n"

    ids = [c["id"] for c in nb["cells"]]
    normalise_notebook(path)  # idempotent: same bytes, same ids
    assert path.read_text(encoding="utf-8") == text and [c["id"] for c in json.loads(text)["cells"]] == ids


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_normalises_to_a_stable_valid_file(tmp_path, notebook):
    import nbformat

    from kinesis_lab.course.demo import normalise_notebook

    path = tmp_path / notebook.name
    path.write_bytes(notebook.read_bytes())
    normalise_notebook(path)
    text = path.read_text(encoding="utf-8")
    assert text == _round_trip(path)
    nbformat.validate(nbformat.read(path, as_version=nbformat.NO_CONVERT))
    normalise_notebook(path)
    assert path.read_text(encoding="utf-8") == text
    # the content is untouched: same cells, same sources and outputs
    before, after = (nbformat.read(p, as_version=4) for p in (notebook, path))  # multiline strings joined
    assert [c["source"] for c in after["cells"]] == [c["source"] for c in before["cells"]]
    assert [c.get("outputs") for c in after["cells"]] == [c.get("outputs") for c in before["cells"]]
