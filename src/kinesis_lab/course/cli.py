"""``kinesis-lab``: the local stack, the environment checks, the producer and the whole demo."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from kinesis_lab import connect
from kinesis_lab.cloud.aws import CostOptInRequired
from kinesis_lab.cloud.config import BuildFolderError, ConfigError, load_config
from kinesis_lab.course import doctor
from kinesis_lab.local import stack


class CliError(Exception):
    """Printed as one line ``kinesis-lab: error: ...`` with exit code 2."""


def _cfg(args):
    return load_config(target=getattr(args, "target", None))


def _local_cfg(args, what: str):
    cfg = _cfg(args)
    if not cfg.is_local:
        raise CliError(f"`{what}` is about the local stack; target is 'aws', where AWS itself runs the services "
                       "(unset LAB_TARGET or pass --target local)")
    return cfg


def _start_stack(cfg, port: int | None = None) -> None:
    state, started = stack.up(cfg.state_dir, cfg.region, port=port)
    if not started:
        print(f"local stack already up at {state.endpoint} (moto pid {state.moto_pid}, Firehose pid {state.firehose_pid})")
    elif started == ("firehose",):
        print(f"local Firehose delivery restarted (pid {state.firehose_pid}): it resumes from its checkpoints; "
              f"moto kept running at {state.endpoint} (pid {state.moto_pid}), the AWS state is intact")
    else:
        print(f"local stack up: moto at {state.endpoint} (pid {state.moto_pid}), "
              f"local Firehose delivery (pid {state.firehose_pid})")
    if "moto" in started and state.lost:
        print(f"WARNING: {state.lost}")
    print(f"environment for boto3 / AWS CLI: {stack.env_file(cfg.state_dir)}")


def cmd_up(args) -> int:
    _start_stack(_local_cfg(args, "up"), args.port)
    return 0


LAB_NOTEBOOK = Path("notebooks") / "00_setup.ipynb"  # what `make lab` opens


def lab_notebook(lang: str | None = None) -> Path:
    """`make lab LAB_LANG=es` opens the Spanish edition's first notebook."""
    return LAB_NOTEBOOK if lang in (None, "", "en") else LAB_NOTEBOOK.parent / lang / LAB_NOTEBOOK.name


def running_as_root() -> bool:
    return getattr(os, "geteuid", lambda: -1)() == 0  # no geteuid on Windows


def jupyter_lab_command(home: Path, extra: Sequence[str] = (), lang: str | None = None) -> list[str]:
    """The JupyterLab command of `make lab` / `kinesis-lab lab`. It serves the repository root, so the notebooks'
    ``../images/...`` resolve (served from notebooks/ they fall outside the server: 403), and opens 00_setup:
    in the browser it starts, and as the URL it prints (``default_url``; else the URL opens the Launcher)."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={Path(home).resolve()}",
           f"--LabApp.default_url=/lab/tree/{LAB_NOTEBOOK.as_posix()}"]
    if running_as_root():
        cmd.append("--allow-root")  # containers, WSL, cloud VMs: JupyterLab refuses root without it
    return [*cmd, *extra, str(Path(home).resolve() / lab_notebook(lang))]


JUPYTERLAB_LOCALES = {"es": "es_ES"}  # LAB_LANG -> the language pack's locale (jupyterlab-language-pack-es-ES)


def lab_settings_dir(state_dir: Path, lang: str) -> Path:
    """A JupyterLab settings folder whose only setting is the interface language: `make lab LAB_LANG=es` points
    JUPYTERLAB_SETTINGS_DIR there, so the learner's own settings folder is left as it is."""
    folder = Path(state_dir) / f"jupyterlab-settings-{lang}"
    plugin = folder / "@jupyterlab" / "translation-extension" / "plugin.jupyterlab-settings"
    plugin.parent.mkdir(parents=True, exist_ok=True)
    plugin.write_text(json.dumps({"locale": JUPYTERLAB_LOCALES[lang]}, indent=2) + "\n", encoding="utf-8")
    return folder


def cmd_lab(args, extra: Sequence[str] = ()) -> int:
    import importlib.util

    from dotenv import dotenv_values

    cfg = _cfg(args)
    if importlib.util.find_spec("jupyterlab") is None:
        raise CliError("JupyterLab is not installed here: pip install -e '.[lab]' (`make lab` does it)")
    env = dict(os.environ)
    # JupyterLab's terminals get this Python first on PATH: `kinesis-lab`, `python -m kinesis_lab...` as in the blocks
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    if sys.prefix != sys.base_prefix:
        env["VIRTUAL_ENV"] = sys.prefix
    if not cfg.is_local:
        print("target aws: no local stack; the notebooks use your AWS credentials")
    elif args.no_stack:
        print("--no-stack: the local stack is not started (notebook 00 starts it)")
    else:
        _start_stack(cfg)
        env.update({k: v for k, v in dotenv_values(stack.env_file(cfg.state_dir)).items() if v is not None})
        print("the stack keeps running after JupyterLab stops: `kinesis-lab down` (make down) stops it")
    lang = os.environ.get("LAB_LANG") or None
    if lang in JUPYTERLAB_LOCALES:
        env["JUPYTERLAB_SETTINGS_DIR"] = str(lab_settings_dir(cfg.state_dir, lang))
    cmd = jupyter_lab_command(cfg.home, [a for a in extra if a != "--"], lang=lang)
    print("$ " + subprocess.list2cmdline(cmd), flush=True)
    if os.name == "posix":
        os.execve(cmd[0], cmd, env)  # JupyterLab takes over this process (and its Ctrl-C)
    proc = subprocess.Popen(cmd, env=env)
    while True:
        try:
            return proc.wait()
        except KeyboardInterrupt:  # JupyterLab asks itself whether to shut down
            continue


def cmd_restart(args) -> int:
    cfg = _local_cfg(args, "restart")
    state = stack.restart_firehose(cfg.state_dir, cfg.region)
    print(f"local Firehose delivery restarted (pid {state.firehose_pid}): it resumes from its checkpoints")
    return 0


def cmd_down(args) -> int:
    cfg = _cfg(args)
    recorded = stack.read_state(cfg.state_dir)
    stopped = stack.down(cfg.state_dir)
    for role in ("moto", "firehose"):
        pid = getattr(recorded, f"{role}_pid", 0)
        if pid and pid not in stopped and stack.pid_alive(pid):
            print(f"pid {pid} (recorded for {role}) is not the lab's process: left alone")
    from kinesis_lab.local.pipeline import stop_pipeline_server

    if stop_pipeline_server(cfg.build_dir):
        print("local Spark Connect server of the pipeline stopped")
    print(f"local stack stopped (pids {', '.join(map(str, stopped))})" if stopped else "local stack was not running")
    return 0


def cmd_status(args) -> int:
    cfg = _cfg(args)
    st = stack.status(cfg.state_dir)
    if args.json:
        print(json.dumps(st, indent=2))
    elif st["endpoint"] is None:
        print("local stack: not running (start it with `kinesis-lab up`)")
    else:
        for name in ("moto", "firehose"):
            p = st[name]
            print(f"{name:9} pid {p['pid']:>7}  {'running' if p['running'] else 'NOT running'}")
        print(f"endpoint  {st['endpoint']}")
    if not args.json:
        for note in st["notes"]:
            print(f"note: {note}")
        print(f"logs      {stack.log_dir(cfg.state_dir)}")
    return 0 if st["up"] or st["endpoint"] is None else 1


def cmd_doctor(args) -> int:
    cfg = _cfg(args)
    checks = doctor.run_checks(cfg.home, cfg.state_dir, include_stack=cfg.is_local)
    for c in checks:
        print(f"[{'ok' if c.ok else 'FAIL':4}] {c.name:12} {c.detail}" + (f"\n       fix: {c.fix}" if not c.ok else ""))
    print(f"target: {cfg.target}  region: {cfg.region}")
    # a stopped stack is not a broken environment: notebooks start it
    return 0 if all(c.ok for c in checks if c.name != "local stack") else 1


def cmd_produce(args) -> int:
    from contextlib import nullcontext

    from kinesis_lab.cloud import producer
    from kinesis_lab.cloud.records import HeaderError
    from kinesis_lab.local.throttling import simulate_throttling

    cfg = load_config(target=args.target, stream_name=args.stream)
    session = connect(cfg, start_stack=False)
    kinesis = session.client("kinesis")
    rate = args.simulated_failure_rate
    throttled = simulate_throttling(kinesis, rate) if rate else nullcontext()  # the local stand-in

    def show(result: producer.ProduceResult) -> None:
        out = result.as_dict()
        print(json.dumps(out, indent=2) if args.json else "\n".join(f"{k:22} {v}" for k, v in out.items()))

    try:
        with throttled:
            result = producer.produce_file(args.dataset, stream_name=cfg.stream_name, kinesis=kinesis,
                                           progress=not args.json)
    except (HeaderError, FileNotFoundError) as exc:
        print(f"kinesis-lab: error: {exc} (nothing was sent)", file=sys.stderr)
        return 1
    except (producer.DeliveryError, producer.SendInterrupted) as exc:
        show(exc.result)  # what was sent before it stopped
        print(f"kinesis-lab: error: {str(exc).rstrip('.')}. Records already sent stay in the stream; sending the file again is "
              "safe (silver keeps each event_id once).", file=sys.stderr)
        return 1
    show(result)
    if not args.stream:  # the lab's stream: what 05-09 check, recorded as notebook 04 records it
        from kinesis_lab.cloud.summary import update_summary

        path = Path(args.dataset).resolve()
        update_summary(cfg.build_dir, dataset=path.name, dataset_path=str(path), csv_rows=result.csv_rows,
                       malformed_rows=result.malformed_rows, records_sent=result.records_sent,
                       records_retried=result.records_retried)
    return 0


CLI_MIN_INTERVAL = 60  # AWS CLI releases before 2.10 refuse IntervalInSeconds below 60 (AWS accepts 0-900)


def cmd_firehose_request(args) -> int:
    """The CreateDeliveryStream request of notebook 03, for ``aws firehose create-delivery-stream
    --cli-input-json``: the stream and role ARNs looked up, the interval at least CLI_MIN_INTERVAL."""
    import boto3
    from botocore.exceptions import ClientError

    from kinesis_lab.cloud.firehose_config import build_delivery_stream_request
    from kinesis_lab.cloud.policies import write_json

    cfg = load_config(target=args.target)
    session = connect(cfg, start_stack=False, confirm_aws_costs=True)  # reading creates nothing
    try:
        stream_arn = boto3.client("kinesis", region_name=cfg.region).describe_stream_summary(
            StreamName=cfg.stream_name)["StreamDescriptionSummary"]["StreamARN"]
        role_arn = boto3.client("iam", region_name=cfg.region).get_role(RoleName=cfg.firehose_role_name)["Role"]["Arn"]
    except ClientError as exc:
        raise CliError(f"{exc} (run notebooks 01 and 02, or their CLI blocks, first; nothing was written)") from exc
    request = build_delivery_stream_request(
        delivery_stream_name=cfg.delivery_stream_name, stream_arn=stream_arn, role_arn=role_arn,
        bucket_arn=session.bucket_arn, prefix=cfg.s3_prefix, error_output_prefix=cfg.error_prefix,
        buffer_size_mb=cfg.buffer_size_mb, buffer_interval_seconds=max(cfg.buffer_interval_seconds, CLI_MIN_INTERVAL),
        compression=cfg.compression, log_group=cfg.log_group, tags=cfg.tags)  # fmt: skip
    write_json(request, args.out)
    return 0


def cmd_pipeline(args) -> int:
    import boto3

    from kinesis_lab.local import pipeline as local_pipeline

    cfg = load_config(target=args.target)
    session = connect(cfg, start_stack=False)
    try:
        mirror = local_pipeline.mirror_s3_prefix(boto3.client("s3", region_name=cfg.region), session.bucket,
                                                 cfg.s3_prefix, local_pipeline.external_location_dir(cfg.build_dir))
        print(f"mirrored {mirror.new_objects} new of {mirror.total_objects} objects from s3://{session.bucket}/")
        local_pipeline.run_pipeline(cfg.home / "databricks" / "pipeline", source_path=mirror.source_dir,
                                    build_dir=cfg.build_dir, full_refresh=args.full_refresh)
    except local_pipeline.PipelineError as exc:
        raise CliError(str(exc).splitlines()[0]) from exc
    summary = local_pipeline.pipeline_summary(cfg.build_dir)
    for key in ("bronze_rows", "silver_rows", "quarantine_rows"):
        print(f"{key:16} {summary[key]}")
    return 0


def cmd_demo(args) -> int:
    from kinesis_lab.course import demo

    try:
        return demo.run_demo(dataset=args.dataset, simulated_failure_rate=args.simulated_failure_rate,
                             notebooks=args.notebooks, keep_stack=args.keep_stack, in_place=args.in_place,
                             lang=args.lang)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def run_reconcile(
    *,
    target: str | None = None,
    dataset: str | None = None,
    as_json: bool = False,
    write_summary: bool = True,
    out=print,
) -> int:
    """``kinesis-lab reconcile``: build the ledger of the configured lab, print it, add its figures to
    build/run-summary.json. 0: every line accounted for; 1: a line is missing or duplicated in silver;
    2: the ledger cannot be built (bad dataset, nothing to check)."""
    import boto3

    from kinesis_lab.cloud.dataset import DatasetError
    from kinesis_lab.cloud.ledger import build_ledger
    from kinesis_lab.cloud.records import HeaderError
    from kinesis_lab.cloud.summary import DatasetMismatch, dataset_of_run, update_summary
    from kinesis_lab.local import pipeline

    cfg = load_config(target=target)

    def fail(message: str) -> int:
        print(f"kinesis-lab: error: {message}", file=sys.stderr)
        return 2

    try:
        csv_path = dataset_of_run(cfg.build_dir, dataset)  # default: the CSV notebook 04 sent
    except (DatasetError, DatasetMismatch) as exc:
        return fail(str(exc))
    kinesis = s3 = bucket = None
    try:
        # reading creates nothing and costs next to nothing: no cost opt-in needed (as for teardown)
        session = connect(cfg, start_stack=False, confirm_aws_costs=True)
    except stack.StackError:
        session = None
    if session is not None:
        kinesis = boto3.client("kinesis", region_name=cfg.region)
        s3 = boto3.client("s3", region_name=cfg.region)
        bucket = session.bucket
    try:
        ledger = build_ledger(
            csv_path,
            kinesis=kinesis,
            stream_name=cfg.stream_name,
            s3=s3,
            bucket=bucket,
            prefix=cfg.s3_prefix,
            tables=pipeline.table_reader(cfg.build_dir),
        )
    except (HeaderError, FileNotFoundError) as exc:
        return fail(str(exc))
    if session is None:
        ledger.notes.insert(
            0,
            "the local stack is not running: Kinesis and S3 not checked "
            "(start it with `kinesis-lab up` to check them)",
        )
    if not ledger.checked_hops():
        return fail(
            "nothing to check: no stream, no bucket and no pipeline tables "
            "(run the series first, or start the local stack)"
        )
    figures = ledger.summary_figures()
    if write_summary:
        update_summary(cfg.build_dir, **figures)
    if as_json:
        out(json.dumps({**figures, "fates": dict(ledger.fates()), "notes": ledger.notes}, indent=2))
    else:
        out(ledger.table())
    return 0 if ledger.ok else 1


def cmd_reconcile(args) -> int:
    return run_reconcile(target=args.target, dataset=args.dataset, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="kinesis-lab", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name, func, help_):
        sp = sub.add_parser(name, help=help_)
        sp.add_argument("--target", choices=None, help="local (default) or aws; overrides LAB_TARGET")
        sp.set_defaults(func=func)
        return sp

    sp = add("up", cmd_up, "start moto + the local Firehose delivery service in the background (only what is not running)")
    sp.add_argument("--port", type=int, help="moto's port on 127.0.0.1 (default: a free one)")
    add("down", cmd_down, "stop the local stack's processes (and the pipeline's Spark server)")
    sp = add("restart", cmd_restart, "stop and start one part of the running local stack")
    sp.add_argument("part", choices=["firehose"], help="firehose: the local delivery worker (moto keeps its state)")
    sp = add("status", cmd_status, "show what runs")
    sp.add_argument("--json", action="store_true")
    add("doctor", cmd_doctor, "check Python, Java, packages, disk and the stack; print the fix for each failure")
    sp = add("produce", cmd_produce, "send a CSV to the Kinesis stream, one JSON record per row")
    sp.add_argument("--dataset", required=True, help="CSV path")
    sp.add_argument("--stream", help="stream name (default: the configured one)")
    sp.add_argument("--simulated-failure-rate", type=float, default=0.0,
                    help="0..1: share of entries answered throttled (simulated on this client) to watch the retries")
    sp.add_argument("--json", action="store_true", help="print the summary as JSON")
    sp = add("firehose-request", cmd_firehose_request,
             "write notebook 03's CreateDeliveryStream request (for aws firehose create-delivery-stream --cli-input-json)")
    sp.add_argument("--out", help="file to write (default: print)")
    sp = add("pipeline", cmd_pipeline, "mirror the Firehose prefix from S3 and run the medallion pipeline locally")
    sp.add_argument("--full-refresh", action="store_true", help="rebuild every table from all files")
    sp = add("demo", cmd_demo, "run the whole notebook series on the local stack and write build/run-summary.json")
    sp.add_argument("--dataset", help="CSV with the course's columns (default: the shipped synthetic sample)")
    sp.add_argument("--simulated-failure-rate", type=float, default=0.0)
    sp.add_argument("--notebooks", nargs="*", help="only these notebook names (default: all, in order)")
    sp.add_argument("--keep-stack", action="store_true", help="leave the local stack running afterwards")
    sp.add_argument("--lang", choices=["en", "es"], default=os.environ.get("LAB_LANG") or None,
                    help="the course's edition: en (notebooks/) or es (notebooks/es/); default LAB_LANG, else en")
    sp.add_argument("--in-place", action="store_true",
                    help="write outputs into notebooks/ (to refresh the committed outputs) instead of build/notebooks/")
    sp = add("reconcile", cmd_reconcile, "every CSV line's fate at each hop; exit 1 if one is missing or twice in silver")
    sp.add_argument("--dataset", help="the CSV that was produced (default: the one notebook 04 sent, else the sample)")
    sp.add_argument("--json", action="store_true", help="print the ledger's figures as JSON")
    sp = add("lab", cmd_lab, "start the local stack (target local) and JupyterLab on notebooks/00_setup.ipynb; "
                             "other options go to JupyterLab (e.g. --no-browser --port=8890)")
    sp.add_argument("--no-stack", action="store_true", help="do not start the local stack")
    sp.allow_abbrev = False  # e.g. JupyterLab's --no-browser is not our --no-stack
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "lab":  # only `lab` passes unknown options on (to JupyterLab)
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return args.func(args, extra) if args.command == "lab" else args.func(args)
    except (CliError, ConfigError, stack.StackError, CostOptInRequired, BuildFolderError) as exc:
        print(f"kinesis-lab: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
