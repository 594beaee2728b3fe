"""Faults along the whole path, each checked with the ledger: no CSV line missing, none twice in silver.

One private stack (moto + local Firehose service, so the service can be killed without touching the
session's stack), one Kinesis stream, one delivery stream, one landing prefix. Each fault scenario
produces its own CSV (distinct content, so distinct event ids) into that stream; then everything is
mirrored and the pipeline runs once, killed half way, and once more to recover. Each test then reads
the ledger of its own CSV.
"""

from __future__ import annotations

import csv
import io
import ipaddress
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from helpers import children_of, dummy_session, group_members, stop_processes
from waiting import DEADLINE

from kinesis_lab.cloud.dataset import COLUMNS, SAMPLE_PATH, generate_synthetic_sample
from kinesis_lab.cloud.firehose_config import build_delivery_stream_request, create_delivery_stream
from kinesis_lab.cloud.landing import read_landing, wait_for_landing
from kinesis_lab.cloud.ledger import build_ledger
from kinesis_lab.cloud.producer import produce_file
from kinesis_lab.cloud.records import iter_records
from kinesis_lab.local import pipeline as lp
from kinesis_lab.local import stack
from kinesis_lab.local.throttling import simulate_throttling

REPO = Path(__file__).resolve().parents[1]
PIPELINE_DIR = REPO / "databricks" / "pipeline"
REGION = "us-east-1"
STREAM, BUCKET, DELIVERY = "faults-stream", "faults-bucket", "faults-delivery"
PREFIX = "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/"
ROLE_ARN = "arn:aws:iam::123456789012:role/FirehoseToS3Role"
DROPPED_LINES = [b"this is not JSON", b'{"half": "an object"', b"[1, 2, 3]", b'{"no_event_id": true}']
NO_RETRIES = Config(retries={"total_max_attempts": 1})  # the producer's own loop must resend


@dataclass
class Lab:
    state: stack.StackState
    state_dir: Path
    build_dir: Path
    session: boto3.Session
    restarted: list[subprocess.Popen] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)
    facts: dict = field(default_factory=dict)  # what each scenario observed while it ran

    def client(self, name: str, config: Config | None = None):
        return self.session.client(name, endpoint_url=self.state.endpoint, config=config)

    def ledger(self, scenario: str):
        return build_ledger(
            self.files[scenario],
            kinesis=self.client("kinesis"),
            stream_name=STREAM,
            s3=self.client("s3"),
            bucket=BUCKET,
            prefix=PREFIX,
            tables=lp.table_reader(self.build_dir),
        )


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, 0)  # stack.up ran in this process: the service is our child
    except ChildProcessError:
        pass


def listening_addresses(pids: list[int]) -> set[str]:
    """``ip:port`` of every TCP socket in LISTEN state that one of ``pids`` holds (from /proc)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    found = set()
    for table, width in (("tcp", 8), ("tcp6", 32)):
        for row in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            cols = row.split()
            if cols[3] != "0A" or cols[9] not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = cols[1].split(":")
            raw = bytes.fromhex(hex_ip)
            if width == 8:
                ip = ipaddress.ip_address(raw[::-1])
            else:  # four little-endian 32-bit words
                ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
                ip = ip.ipv4_mapped or ip  # ::ffff:7f00:1 is 127.0.0.1
            found.add(f"{ip}:{int(hex_port, 16)}")
    return found


def is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address.rsplit(":", 1)[0]).is_loopback


@pytest.fixture(scope="module")
def lab(tmp_path_factory, private_stacks, pipeline_builds):
    base = tmp_path_factory.mktemp("faults")
    state, _ = stack.up(private_stacks(base / "state"), REGION)
    pipeline_builds(base / "build")
    lab = Lab(state, base / "state", base / "build", dummy_session())
    try:
        yield lab
    finally:
        if hasattr(lp, "stop_pipeline_server"):  # the build folder's long-lived Spark server, if any
            lp.stop_pipeline_server(lab.build_dir)
        stop_processes(lab.restarted)  # only the processes this module started
        stack.down(base / "state")


def make_csv(lab: Lab, name: str, rows: int, seed: int) -> Path:
    """A dirty synthetic CSV whose rows are this scenario's own: event ids come from a row's content, so
    rows shared with another scenario's file (the sample's dirty rows, say) would be the same events."""
    path = generate_synthetic_sample(
        lab.state_dir.parent / "csv" / f"{name}.csv", rows=rows, seed=seed, dirty=True
    )
    header, *lines = path.read_text(encoding="utf-8").splitlines()
    tagged = []
    for line in lines:
        fields = next(csv.reader([line]))
        if len(fields) == len(COLUMNS):
            fields[0] = f"{fields[0]} ({name})"
            buffer = io.StringIO()
            csv.writer(buffer, lineterminator="").writerow(fields)
            tagged.append(buffer.getvalue())
        else:  # the malformed line stays malformed
            tagged.append(f"{name} {line}")
    path.write_text("\n".join([header, *tagged]) + "\n", encoding="utf-8")
    lab.files[name] = path
    return path


def throttling(lab: Lab) -> None:
    """Whole calls answered ProvisionedThroughputExceededException (nothing written) and 30 % of the
    entries of the other calls failed (not written, reported failed in place, as on AWS)."""
    lab.files["throttling"] = SAMPLE_PATH
    client = lab.client("kinesis", NO_RETRIES)
    with simulate_throttling(client, rate=0.3, seed=11, call_rate=0.3) as sim:
        result = produce_file(SAMPLE_PATH, stream_name=STREAM, kinesis=client, progress=False, batch_size=100)
    lab.facts["throttling"] = {
        "result": result,
        "injected_calls": sim.injected_calls,
        "injected_entries": sim.injected_entries,
    }


def ambiguous_failure(lab: Lab) -> None:
    """Two PutRecords calls reach Kinesis and are written, but their answer is lost (a read timeout):
    botocore resends them, so their records are in the stream twice."""
    path = make_csv(lab, "ambiguous", rows=300, seed=101)
    client = lab.client("kinesis", Config(retries={"mode": "standard", "max_attempts": 3}))
    state = {"call": 0, "drop": False, "dropped_entries": 0, "timeouts": 0}
    drop_calls = {1, 3}

    def before_call(params, **_):
        state["call"] += 1
        state["drop"] = state["call"] in drop_calls
        if state["drop"]:
            state["dropped_entries"] += len(params["Records"])

    def before_send(request, **_):
        if not state["drop"]:
            return None
        state["drop"] = False
        client._endpoint.http_session.send(request)  # moto writes the records...
        state["timeouts"] += 1
        raise ReadTimeoutError(endpoint_url=request.url)  # ...and the answer never arrives

    client.meta.events.register("before-parameter-build.kinesis.PutRecords", before_call)
    client.meta.events.register("before-send.kinesis.PutRecords", before_send)
    result = produce_file(path, stream_name=STREAM, kinesis=client, progress=False, batch_size=60)
    lab.facts["ambiguous"] = {"result": result, **state}


def interrupted_producer(lab: Lab) -> None:
    """Ctrl-C (KeyboardInterrupt) right after the 3rd PutRecords call was written, before the producer
    saw its answer; then the same file is produced again from the start."""
    path = make_csv(lab, "interrupted", rows=400, seed=102)
    client = lab.client("kinesis", NO_RETRIES)
    calls = {"n": 0, "entries": 0}

    def after_call(model, params=None, **_):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt

    def count(params, **_):
        calls["entries"] += len(params["Records"])

    client.meta.events.register("before-parameter-build.kinesis.PutRecords", count)
    client.meta.events.register("after-call.kinesis.PutRecords", after_call)
    with pytest.raises(KeyboardInterrupt):
        produce_file(path, stream_name=STREAM, kinesis=client, progress=False, batch_size=50)
    rerun = produce_file(
        path, stream_name=STREAM, kinesis=lab.client("kinesis"), progress=False, batch_size=50
    )
    lab.facts["interrupted"] = {"first_run_entries": calls["entries"], "rerun": rerun}


def firehose_killed(lab: Lab) -> None:
    """SIGKILL the local Firehose service while this file is being produced, then restart it."""
    path = make_csv(lab, "firehose_killed", rows=600, seed=103)
    client = lab.client("kinesis")
    pid = lab.state.firehose_pid
    calls = {"n": 0}
    s3 = lab.client("s3")
    # the service has delivered (and checkpointed) the first scenario's records before it is killed
    throttled = {r.event_id for r in iter_records(lab.files["throttling"])}
    assert throttled <= set(wait_for_landing(s3, BUCKET, "bronze/", throttled, timeout=DEADLINE).event_ids)

    def before_call(**_):
        calls["n"] += 1
        time.sleep(0.05)  # records keep flowing for about a second
        if calls["n"] == 8:
            os.kill(pid, signal.SIGKILL)
            _reap(pid)

    client.meta.events.register("before-parameter-build.kinesis.PutRecords", before_call)
    produce_file(path, stream_name=STREAM, kinesis=client, progress=False, batch_size=25)
    assert not stack.pid_alive(pid)
    time.sleep(2)  # the service stays down a little: nothing is read meanwhile
    landed_while_down = read_landing(s3, BUCKET, "bronze/").event_ids
    env = {**os.environ, **stack.local_env(lab.state.endpoint, REGION), "PYTHONUNBUFFERED": "1"}
    with open(lab.state_dir / "logs" / "firehose-restarted.log", "ab") as log:
        lab.restarted.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kinesis_lab.local.firehose",
                    "--state-dir",
                    str(lab.state_dir / "firehose"),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )
        )
    lab.facts["firehose_killed"] = {"calls": calls["n"], "landed_while_down": landed_while_down}


def foreign_object(lab: Lab) -> None:
    """Someone drops a file that is not JSON lines into the landing prefix."""
    key = "bronze/ingestion_date=2026/01/01/someone-dropped-this.txt"
    lab.client("s3").put_object(Bucket=BUCKET, Key=key, Body=b"\n".join(DROPPED_LINES) + b"\n\n")


def interrupted_pipeline(lab: Lab, source: Path) -> None:
    """SIGKILL the pipeline's process group as soon as silver starts (bronze committed, silver not),
    noting the sockets it listens on first; then run it again."""
    seen: dict = {"listening": set(), "killed": None}
    parent = os.getpid()

    def pipeline_pid() -> int:
        [pid] = [
            p
            for p in children_of(parent)
            if b"kinesis_lab.local.pipeline.spark_cli" in Path(f"/proc/{p}/cmdline").read_bytes()
        ]
        return pid

    def spark_processes(pid: int) -> list[int]:
        # the run's process group, and the build folder's long-lived Spark Connect server if it has one
        servers = lp.server_pids(lab.build_dir) if hasattr(lp, "server_pids") else []
        return sorted(set(group_members(pid)) | set(servers))

    def echo(line: str) -> None:
        if "bronze_events is STARTING" in line:
            seen["listening"] |= listening_addresses(spark_processes(pipeline_pid()))
        if "silver_events is STARTING" in line and seen["killed"] is None:
            pid = pipeline_pid()
            seen["listening"] |= listening_addresses(spark_processes(pid))
            seen["killed"] = pid
            os.killpg(pid, signal.SIGKILL)

    with pytest.raises(lp.PipelineError) as err:
        lp.run_pipeline(PIPELINE_DIR, source_path=source, build_dir=lab.build_dir, echo=echo, timeout=600)
    deadline = time.monotonic() + DEADLINE  # SIGKILLed: gone as soon as the kernel has reaped it
    while group_members(seen["killed"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    seen["left_running"] = group_members(seen["killed"])
    seen["servers_after_kill"] = lp.server_pids(lab.build_dir)  # its flows must not run on in the server
    seen["error"] = str(err.value)
    seen["after_kill"] = {t: lp.table_rows(lab.build_dir, t) for t in (lp.BRONZE_TABLE, lp.SILVER_TABLE)}
    rerun = lp.run_pipeline(PIPELINE_DIR, source_path=source, build_dir=lab.build_dir, echo=None)
    seen["rerun_flows"] = rerun.flows
    lab.facts["pipeline"] = seen


@pytest.fixture(scope="module")
def ran(lab):
    """Every scenario, in order, then delivery, mirror and the pipeline (killed, then again)."""
    s3, kinesis = lab.client("s3"), lab.client("kinesis")
    s3.create_bucket(Bucket=BUCKET)
    kinesis.create_stream(StreamName=STREAM, StreamModeDetails={"StreamMode": "ON_DEMAND"})
    arn = kinesis.describe_stream_summary(StreamName=STREAM)["StreamDescriptionSummary"]["StreamARN"]
    request = build_delivery_stream_request(
        delivery_stream_name=DELIVERY, stream_arn=arn, role_arn=ROLE_ARN, bucket_arn=f"arn:aws:s3:::{BUCKET}",
        prefix=PREFIX, error_output_prefix="errors/!{firehose:error-output-type}/", buffer_size_mb=1,
        buffer_interval_seconds=1)  # fmt: skip
    assert create_delivery_stream(lab.client("firehose"), request)["created"]
    started = time.monotonic()
    for scenario in (throttling, ambiguous_failure, interrupted_producer, firehose_killed, foreign_object):
        scenario(lab)
    expected = {r.event_id for path in lab.files.values() for r in iter_records(path)}
    landing = wait_for_landing(s3, BUCKET, "bronze/", expected, timeout=DEADLINE)
    assert expected <= set(landing.event_ids), (
        f"{len(expected - set(landing.event_ids))} records never landed"
    )
    lab.facts["landing"] = landing
    lab.facts["produce_seconds"] = time.monotonic() - started
    mirror = lp.mirror_s3_prefix(s3, BUCKET, PREFIX, lab.build_dir / "external_location")
    lab.facts["mirror"] = mirror
    interrupted_pipeline(lab, mirror.source_dir)
    return lab


def lines_in(folder: Path) -> int:
    return sum(
        1
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".")
        for line in p.read_bytes().splitlines()
        if line.strip()
    )


# --- the tests ---------------------------------------------------------------------------------------
def test_throttling_resends_only_failed_entries_and_nothing_is_lost(ran):
    facts = ran.facts["throttling"]
    result = facts["result"]
    assert facts["injected_calls"] > 0 and result.failed_calls == facts["injected_calls"]
    assert facts["injected_entries"] > 0 and result.failed_entries == facts["injected_entries"]
    assert result.records_retried >= result.failed_entries
    ledger = ran.ledger("throttling")
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    # a failed entry was never written, and only failed entries were resent: each record once in the stream
    assert (rows["kinesis"]["lines"], rows["kinesis"]["extra_copies"]) == (540, 0)
    assert ledger.ok, ledger.table()
    assert ledger.hop_counts() == {
        "csv_lines": 540,
        "csv_records": 540,
        "kinesis": 540,
        "s3": 540,
        "bronze": 540,
        "silver": 532,
        "quarantine": 8,
    }


def test_ambiguous_failure_duplicates_in_the_stream_once_in_silver(ran):
    facts = ran.facts["ambiguous"]
    assert facts["timeouts"] == 2 and facts["dropped_entries"] == 120
    assert facts["result"].records_sent == 300 and facts["result"].failed_calls == 0  # botocore resent them
    ledger = ran.ledger("ambiguous")
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    # the resent calls' records are in the stream, in S3 and in bronze twice ...
    for hop in ("kinesis", "s3", "bronze"):
        assert (rows[hop]["lines"], rows[hop]["extra_copies"]) == (300, 120), hop
    # ... and once in silver / quarantine
    assert ledger.ok, ledger.table()
    assert ledger.hop_counts()["silver"] + ledger.hop_counts()["quarantine"] == 300


def test_producer_interrupted_half_way_and_run_again(ran):
    facts = ran.facts["interrupted"]
    assert facts["first_run_entries"] == 150  # three calls of 50 written before the interrupt
    assert facts["rerun"].records_sent == 400
    ledger = ran.ledger("interrupted")
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    assert (rows["kinesis"]["lines"], rows["kinesis"]["extra_copies"]) == (400, 150)
    assert ledger.ok, ledger.table()


def test_firehose_killed_and_restarted_delivers_at_least_once_and_silver_once(ran):
    """At least once in S3, exactly once in silver. The service writes an object first and moves its
    checkpoint after, so a SIGKILL between the two delivers that object's records again at restart
    (the same order as real Firehose: at-least-once); a kill before the write loses only the
    in-memory buffer, which is read again from Kinesis. Either way silver's dedup on event_id makes
    the result exactly once, which the ledger checks."""
    facts = ran.facts["firehose_killed"]
    ids = [r.event_id for r in iter_records(ran.files["firehose_killed"])]
    # killed mid-file (7 calls of 25 sent): nothing sent after the kill was delivered while it was down
    assert sum(1 for i in ids if facts["landed_while_down"][i]) <= 7 * 25
    ledger = ran.ledger("firehose_killed")
    rows = {r["hop"]: r for r in ledger.hop_rows()}
    assert rows["s3"]["lines"] == 600 and rows["kinesis"]["extra_copies"] == 0
    print(f"copies in S3 beyond one after the SIGKILL: {rows['s3']['extra_copies']}")
    before = (ran.state_dir / "logs" / "firehose.log").read_text()
    assert " INFO delivered s3://faults-bucket/" in before  # it had delivered (and checkpointed) before
    assert ledger.ok, ledger.table()
    log = (ran.state_dir / "logs" / "firehose-restarted.log").read_text()
    assert " INFO delivered s3://faults-bucket/" in log  # the restarted service delivered the rest


def test_pipeline_killed_half_way_recovers_without_duplicates(ran):
    seen = ran.facts["pipeline"]
    # the run's process group was SIGKILLed, the Spark server it had started with it: the runner says
    # the run died (exit code -9) or, if it saw the server gone first, that the server died
    assert "exit code -9" in seen["error"] or seen["error"].startswith("the Spark server died"), seen["error"]
    assert seen["left_running"] == []  # the whole process group (JVM included) is gone
    # nor does the build folder's server run on with the killed run's flows (they would collide with the rerun's)
    assert seen["servers_after_kill"] == [], seen["error"]
    # killed mid-run: bronze had committed, silver had not finished
    assert seen["after_kill"][lp.BRONZE_TABLE] > 0
    total_silver = lp.table_rows(ran.build_dir, lp.SILVER_TABLE)
    assert seen["after_kill"][lp.SILVER_TABLE] < total_silver
    assert set(seen["rerun_flows"].values()) == {"COMPLETED"}
    # bronze holds every landed line once (not once per run); silver holds each event once
    assert lp.table_rows(ran.build_dir, lp.BRONZE_TABLE) == lines_in(ran.facts["mirror"].source_dir)
    silver = lp.read_table(ran.build_dir, lp.SILVER_TABLE, ["event_id"])["event_id"]
    assert silver.is_unique
    for scenario in ran.files:
        assert ran.ledger(scenario).ok, scenario


def test_a_foreign_object_in_the_prefix_is_kept_in_bronze_and_quarantined(ran):
    # test_local_pipeline covers the pipeline side; here: the dropped lines do not break any ledger,
    # and each ledger counts them as records of none of its lines, at S3, bronze and silver
    texts = [line.decode() for line in DROPPED_LINES]
    bronze = lp.read_table(ran.build_dir, lp.BRONZE_TABLE, ["_raw_line", "_parse_ok"])
    dropped = bronze[bronze["_raw_line"].isin(texts)].set_index("_raw_line")["_parse_ok"]
    assert dropped.to_dict() == {t: t == '{"no_event_id": true}' for t in texts}
    quarantine = lp.read_table(ran.build_dir, lp.QUARANTINE_TABLE, ["_raw_line", "broken_rules", "event_id"])
    rules = {
        raw: list(broken)
        for raw, broken in zip(quarantine["_raw_line"], quarantine["broken_rules"], strict=True)
        if raw in texts
    }
    assert rules == {
        "this is not JSON": ["record_parsed"],
        '{"half": "an object"': ["record_parsed"],
        "[1, 2, 3]": ["record_parsed"],
        '{"no_event_id": true}': [
            "event_id_present",
            "country_present",
            "country_code_present",
            "gender_present",
            "age_group_present",
            "year_is_integer",
            "rate_is_number",
            "children_is_number",
        ],
    }
    landed = read_landing(ran.client("s3"), BUCKET, "bronze/").event_ids
    other_lines = sum(
        1 for name, path in ran.files.items() if name != "throttling" for _ in iter_records(path)
    )
    for scenario in ran.files:
        ledger = ran.ledger(scenario)
        ours = {f.event_id for f in ledger.sent}
        rows = {r["hop"]: r for r in ledger.hop_rows()}
        foreign_copies = sum(n for i, n in landed.items() if i not in ours)
        assert rows["s3"]["other_records"] == foreign_copies + len(DROPPED_LINES), scenario
        assert rows["bronze"]["other_records"] == foreign_copies + len(DROPPED_LINES), scenario
        assert ledger.ok, scenario
    # silver: every other file's line once, and the four dropped lines (no event id)
    rows = {r["hop"]: r for r in ran.ledger("throttling").hop_rows()}
    assert rows["silver"]["other_records"] == other_lines + len(DROPPED_LINES)


def test_the_pipelines_spark_server_listens_on_loopback_only(ran):
    """Every TCP port the pipeline's Spark processes listen on (seen in /proc while it ran) is on
    127.0.0.1 / ::1: the Spark Connect server, and also the driver's RPC and block manager ports, which
    Spark binds to the host's network address unless told otherwise (spark.driver.bindAddress)."""
    listening = ran.facts["pipeline"]["listening"]
    print("the pipeline's processes listen on:", sorted(listening))
    assert listening, "no listening socket seen: the check looked at the wrong processes"
    assert {a for a in listening if not is_loopback(a)} == set(), listening
