"""``make demo`` / ``kinesis-lab demo``: run the notebook series in order with papermill on the local stack."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

from kinesis_lab.cloud.config import LabConfig, child_environment, load_config, writable_folder
from kinesis_lab.cloud.summary import read_summary, reconciliation_problems, summary_path
from kinesis_lab.local import stack
from kinesis_lab.local.pipeline import stop_pipeline_server

NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.ipynb$")
DATASET_CHOOSERS = ("00", "04")  # the notebooks given --dataset; the others read it from the run summary
# what a fresh demo run starts without, under the build folder
RUN_ARTIFACTS = ("notebooks", "lakehouse", "external_location", "run-summary.json", "previous-run-summary.json",
                 "figures", "demo-stack", "databricks-sql", "firehose-delivery-stream.json")


def series(notebooks_dir: Path) -> list[Path]:
    """The numbered notebooks, in order (99_teardown last)."""
    return sorted(p for p in notebooks_dir.iterdir() if NOTEBOOK_PATTERN.match(p.name))


def parameters_for(notebook: Path, wanted: dict) -> dict:
    """Only the parameters this notebook declares in its `parameters` cell. The dataset goes to the notebooks
    that choose it (00) and send it (04): 05-09 find it in the run summary, as they do for a learner."""
    import papermill

    declared = papermill.inspect_notebook(str(notebook))
    if notebook.name[:2] not in DATASET_CHOOSERS:
        declared = {k: v for k, v in declared.items() if k != "dataset"}
    return {k: v for k, v in wanted.items() if k in declared and v is not None}


REPO_PLACEHOLDER = "[repo]"  # stands for the repository path; plain text, so HTML outputs show it too


def _replace_in_strings(node, old: str, new: str):
    if isinstance(node, str):
        return node.replace(old, new)
    if isinstance(node, list):
        return [_replace_in_strings(v, old, new) for v in node]
    if isinstance(node, dict):
        return type(node)((k, _replace_in_strings(v, old, new)) for k, v in node.items())
    return node


def _js_numbers(node):
    """JSON numbers as a browser sends them back: JavaScript writes 540.0 as 540."""
    if isinstance(node, float) and node.is_integer() and abs(node) < 1e21:
        return int(node)
    if isinstance(node, list):
        return [_js_numbers(v) for v in node]
    if isinstance(node, dict):
        return type(node)((k, _js_numbers(v)) for k, v in node.items())
    return node


def _normalised(nb):
    import nbformat
    from ipykernel.kernelspec import get_kernel_dict

    nb = _js_numbers(nb)  # e.g. ipywidgets' state in the metadata
    if nb.nbformat_minor < 5:
        nb = nbformat.v4.upgrade(nb, from_version=4, from_minor=nb.nbformat_minor)  # 4.5: cell ids
    nb = nbformat.from_dict(nbformat.validator.normalize(nb)[1])  # e.g. duplicate ids
    if (nb.metadata.get("kernelspec") or {}).get("name", "python3") == "python3":  # the demo's kernel
        native = get_kernel_dict()
        nb.metadata["kernelspec"] = nbformat.from_dict(
            {"display_name": native["display_name"], "language": native["language"], "name": "python3"})
    nbformat.validate(nb)
    return nb


def normalise_notebook(path: Path) -> None:
    """Rewrite a notebook byte for byte as JupyterLab saves it, so opening and saving it changes nothing.

    nbformat 4.5 with cell ids, indent 1, sorted keys, trailing newline (``nbformat.write``), whole floats as
    integers (the browser's JSON), and the kernelspec JupyterLab sets on open: another ``display_name`` marks the
    notebook modified as soon as its kernel starts (so does a ``language_info`` of another Python version, which
    no file can avoid)."""
    import nbformat

    nbformat.write(_normalised(nbformat.read(path, as_version=4)), path)


def sanitise_outputs(path: Path, home: Path) -> None:
    """Stored outputs must not carry this machine's paths (the account id on local is moto's placeholder);
    the file is written as JupyterLab saves it (``normalise_notebook``)."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for old in dict.fromkeys((str(home), Path(home).as_posix())):
        nb = _replace_in_strings(nb, old, REPO_PLACEHOLDER)
    nbformat.write(_normalised(nb), path)


def run_demo(dataset: str | None = None, simulated_failure_rate: float = 0.0, notebooks: list[str] | None = None,
             keep_stack: bool = False, in_place: bool = False) -> int:
    cfg = load_config(target="local")
    home, build = cfg.home, cfg.build_dir
    nb_dir = home / "notebooks"
    chosen = series(nb_dir)
    if notebooks:
        chosen = [p for p in chosen if p.stem in notebooks or p.name in notebooks or p.stem[:2] in notebooks]
    writable_folder(build)
    stop_pipeline_server(build)  # a server left by an earlier run holds the old metastore open
    for name in RUN_ARTIFACTS:  # every run starts from nothing, like a fresh account and workspace
        target = build / name
        shutil.rmtree(target, ignore_errors=True) if target.is_dir() else target.unlink(missing_ok=True)
    # a private stack for the run, so a learner's own `kinesis-lab up` state is untouched
    state_dir = build / "demo-stack"
    run_cfg = cfg.with_overrides(state_dir=state_dir)
    out_dir = build / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    wanted = {"dataset": dataset, "simulated_failure_rate": simulated_failure_rate or None}

    print(f"running {len(chosen)} notebooks on the local stack -> {out_dir}")
    with child_environment(run_cfg):  # the notebooks' kernels resolve this configuration
        return _run_series(chosen, run_cfg, wanted, in_place, keep_stack)


def _run_series(chosen: list[Path], cfg: LabConfig, wanted: dict, in_place: bool, keep_stack: bool) -> int:
    import papermill

    home, build, state_dir = cfg.home, cfg.build_dir, cfg.state_dir
    nb_dir, out_dir = home / "notebooks", build / "notebooks"
    timings = []
    try:
        for nb in chosen:
            output = nb if in_place else out_dir / nb.name
            started = time.monotonic()
            print(f"  {nb.name:45}", end="", flush=True)
            try:
                papermill.execute_notebook(str(nb), str(output), parameters=parameters_for(nb, wanted),
                                           cwd=str(nb_dir), kernel_name="python3", progress_bar=False)
            except papermill.PapermillExecutionError as exc:
                print("FAILED")
                print(f"\nnotebook {nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}\n"
                      f"see {output}")
                return 1
            seconds = time.monotonic() - started
            timings.append((nb.name, round(seconds, 1)))
            if in_place:
                sanitise_outputs(output, home)
            print(f"{seconds:6.1f} s")
    finally:
        stop_pipeline_server(build)  # the long-lived Spark Connect server of this build folder
        if not keep_stack:
            stack.down(state_dir)

    summary = read_summary(build) or read_summary(build, previous=True)  # 99_teardown closes the run
    summary["notebook_seconds"] = dict(timings)
    summary["total_seconds"] = round(sum(t for _, t in timings), 1)
    summary_path(build).parent.mkdir(parents=True, exist_ok=True)
    summary_path(build).write_text(json.dumps(summary, indent=2, sort_keys=True))
    print(f"\nrun summary: {summary_path(build)}")
    for key in ("csv_rows", "malformed_rows", "records_sent", "records_retried", "s3_objects", "s3_records",
                "bronze_rows", "silver_rows", "quarantine_rows", "total_seconds"):
        if key in summary:
            print(f"  {key:22} {summary[key]}")
    problems = reconciliation_problems(summary)
    if problems:
        print("\nthe run does NOT reconcile:\n  " + "\n  ".join(problems))
        return 1
    print("  every hop reconciles")
    return 0
