"""The local stack never harms the learner's machine and survives its own faults (issue #15).

Each test injects one fault on a private stack (own state folder, real processes) and checks the
outcome: pids of other programs are never signalled, a dead Firehose worker is restarted alone and
delivers everything, a dead moto is reported as lost state, the health check does not read moto's
whole state, concurrent up/down leave no orphan, an unwritable build folder is a one-line message.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import pytest
from helpers import clients_for, stop_processes
from test_local_firehose_stack import make_delivery_stream, make_source, read_objects
from test_stack_cli import run_cli
from waiting import DEADLINE, wait_until

from kinesis_lab.cloud.config import load_config
from kinesis_lab.cloud.summary import update_summary
from kinesis_lab.local import pipeline as lp
from kinesis_lab.local import procs, stack, targets
from kinesis_lab.local.moto_server import HEALTH_PATH

REGION = "us-east-1"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def state_dir(private_stack_dir):
    return private_stack_dir


@pytest.fixture
def own_processes():
    """Start processes this test owns; each is killed at the end if still running."""
    started: list[subprocess.Popen] = []

    def start(args, **kwargs) -> subprocess.Popen:
        started.append(subprocess.Popen(args, stdin=subprocess.DEVNULL, **kwargs))
        return started[-1]

    yield start
    stop_processes(started)


def lab_pids(state_dir: Path) -> dict[str, list[int]]:
    """The lab's processes of this state folder, found by their command line."""
    return {
        "moto": procs.find(stack.moto_signature(state_dir)),
        "firehose": procs.find(stack.firehose_signature(state_dir)),
    }


def kill_and_wait(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not procs.alive(pid), f"pid {pid} to die after SIGKILL")


# --- 1. pids recorded in the state file that belong to other programs ------------------------------
def test_pids_of_other_programs_are_never_signalled(state_dir, own_processes):
    """stack.json outlives reboots and pids are reused: its pids now belong to a `sleep` and to a
    lab-looking process of another state folder. `down` (make down / make clean), the teardown's
    stack.down, `up` (which used to call down on a half-up stack) leave both running."""
    sleeper = own_processes(["sleep", "600"])
    lookalike = own_processes(
        [sys.executable, "-c", "import time; time.sleep(600)", stack.FIREHOSE_MODULE,
         f"--state-dir={state_dir.parent / 'other-state' / 'firehose'}"]
    )  # fmt: skip
    wait_until(lambda: procs.command_line(lookalike.pid), "the look-alike to start")  # empty while it execs
    stale = {
        "port": stack.free_port(), "moto_pid": sleeper.pid, "firehose_pid": lookalike.pid, "region": REGION,
        "stack_id": "before-the-reboot",
        # even with the right start times, the command line does not name this state folder
        "moto_started": procs.start_time(sleeper.pid), "firehose_started": procs.start_time(lookalike.pid),
    }  # fmt: skip

    def write_stale_state() -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        (state_dir / "stack.json").write_text(json.dumps(stale))

    env = {"LAB_STATE_DIR": str(state_dir), "LAB_BUILD_DIR": str(state_dir.parent / "build")}
    write_stale_state()
    status = stack.status(state_dir)
    assert not status["moto"]["running"] and not status["firehose"]["running"]
    assert f"recorded pid {sleeper.pid} is not the lab's moto" in status["moto"]["note"]
    assert "forgotten, left alone" in status["firehose"]["note"]
    printed = run_cli("status", env_extra=env)
    assert printed.returncode == 1 and f"note: moto: recorded pid {sleeper.pid} is not the lab's" in printed.stdout

    down = run_cli("down", env_extra=env)  # make down, make clean
    assert down.returncode == 0, down.stderr
    assert f"pid {sleeper.pid} (recorded for moto) is not the lab's process: left alone" in down.stdout
    assert "local stack was not running" in down.stdout
    assert sleeper.poll() is None and lookalike.poll() is None

    write_stale_state()
    assert stack.down(state_dir) == []  # what 99_teardown runs
    assert sleeper.poll() is None and lookalike.poll() is None

    write_stale_state()
    up = run_cli("up", env_extra=env)
    assert up.returncode == 0, up.stderr
    assert sleeper.poll() is None and lookalike.poll() is None
    state = stack.read_state(state_dir)
    assert {state.moto_pid, state.firehose_pid}.isdisjoint({sleeper.pid, lookalike.pid})
    assert stack.status(state_dir)["up"]
    assert lab_pids(state_dir) == {"moto": [state.moto_pid], "firehose": [state.firehose_pid]}

    down = run_cli("down", env_extra=env)
    assert f"local stack stopped (pids {state.firehose_pid}, {state.moto_pid})" in down.stdout
    assert lab_pids(state_dir) == {"moto": [], "firehose": []}
    assert sleeper.poll() is None and lookalike.poll() is None


def test_a_recorded_start_time_that_differs_is_not_the_same_process(tmp_path, own_processes):
    signature = procs.Signature.of("kinesis_lab.local.moto_server", "--state-dir", tmp_path)
    proc = own_processes([sys.executable, "-c", "import time; time.sleep(600)", "kinesis_lab.local.moto_server",
                          "--state-dir", str(tmp_path)])  # fmt: skip
    wait_until(lambda: procs.command_line(proc.pid), "the process to start")  # empty while it execs
    started = procs.start_time(proc.pid)
    assert procs.is_ours(proc.pid, signature, started)
    assert not procs.is_ours(proc.pid, signature, str(int(started) - 1))  # same pid, another process
    assert not procs.send(proc.pid, signature, signal.SIGTERM, str(int(started) - 1))
    other = procs.Signature.of("kinesis_lab.local.moto_server", "--state-dir", tmp_path / "elsewhere")
    assert not procs.send(proc.pid, other, signal.SIGTERM)
    assert proc.poll() is None
    assert procs.find(signature) == [proc.pid]
    assert procs.stop([(proc.pid, signature, started)]) == [proc.pid]
    assert proc.wait(timeout=DEADLINE) == -signal.SIGTERM


def test_without_proc_the_ps_fallback_checks_the_same_way(tmp_path, own_processes, monkeypatch):
    """macOS has no /proc: command lines and start times come from ps (arguments joined by spaces)."""
    folder = tmp_path / "state dir with spaces"
    signature = procs.Signature.of("kinesis_lab.local.moto_server", "--state-dir", folder)
    mine = own_processes([sys.executable, "-c", "import time; time.sleep(600)", "kinesis_lab.local.moto_server",
                          f"--state-dir={folder}"])  # fmt: skip
    near_miss = own_processes([sys.executable, "-c", "import time; time.sleep(600)", "kinesis_lab.local.moto_server",
                               f"--state-dir={folder}-2"])  # fmt: skip
    wait_until(lambda: procs.find(signature) == [mine.pid], "the process to be found through /proc")
    monkeypatch.setattr(procs, "_has_proc", lambda: False)
    assert procs.command_line(mine.pid).endswith(f"kinesis_lab.local.moto_server --state-dir={folder}")
    started = procs.start_time(mine.pid)
    assert started and not started.isdigit()  # ps's lstart, e.g. "Sun Nov 29 17:56:49 2026"
    assert procs.find(signature) == [mine.pid]
    assert procs.is_ours(mine.pid, signature, started) and not procs.is_ours(near_miss.pid, signature)
    assert procs.stop([(near_miss.pid, signature, None)]) == []
    assert procs.stop([(mine.pid, signature, started)]) == [mine.pid]
    assert mine.wait(timeout=DEADLINE) == -signal.SIGTERM and near_miss.poll() is None


def test_down_stops_the_labs_processes_when_the_state_file_is_gone(state_dir):
    state, started = stack.up(state_dir, REGION)
    assert started == ("moto", "firehose")
    (state_dir / "stack.json").unlink()  # deleted, or a stale copy from elsewhere
    notes = stack.status(state_dir)["notes"]
    assert f"moto runs as pid {state.moto_pid} without a state file: `kinesis-lab down` stops it" in notes
    assert sorted(stack.down(state_dir)) == sorted([state.moto_pid, state.firehose_pid])
    assert lab_pids(state_dir) == {"moto": [], "firehose": []}


# --- 2. a Firehose worker that dies mid-delivery ---------------------------------------------------
def test_worker_killed_mid_delivery_then_up_keeps_moto_and_delivers_every_record(state_dir):
    state, _ = stack.up(state_dir, REGION)
    clients = clients_for(state.endpoint)
    bucket, stream = "mid-delivery-bucket", "mid-delivery-stream"
    arn = make_source(clients, stream, bucket)
    make_delivery_stream(clients, "mid-delivery", arn, bucket, buffer_interval_seconds=1)
    kinesis = clients("kinesis")
    sent: list[bytes] = []
    killed = threading.Event()

    def produce() -> None:  # 40 batches of 50, until well after the kill
        for batch in range(40):
            records = [json.dumps({"n": batch * 50 + i}).encode() + b"\n" for i in range(50)]
            kinesis.put_records(StreamName=stream, Records=[{"Data": r, "PartitionKey": str(i)} for i, r in enumerate(records)])
            sent.extend(records)
            if batch > 20:
                killed.wait(timeout=60)

    producer = threading.Thread(target=produce)
    producer.start()
    wait_until(lambda: read_objects(clients, bucket), "a first object delivered")
    kill_and_wait(state.firehose_pid)  # while records keep arriving
    killed.set()
    producer.join(timeout=120)
    assert len(sent) == 2000

    up = run_cli("up", env_extra={"LAB_STATE_DIR": str(state_dir)})
    assert up.returncode == 0, up.stderr
    assert "local Firehose delivery restarted" in up.stdout and "the AWS state is intact" in up.stdout
    after = stack.read_state(state_dir)
    assert (after.moto_pid, after.port, after.stack_id) == (state.moto_pid, state.port, state.stack_id)
    assert after.firehose_pid != state.firehose_pid and after.lost is None
    clients("s3").head_bucket(Bucket=bucket)  # moto's state is intact

    def delivered() -> list[bytes]:
        return [line + b"\n" for body in read_objects(clients, bucket).values() for line in body.splitlines()]

    wait_until(lambda: set(sent) <= set(delivered()), "every record to land after the restart")
    lines = delivered()
    print(f"records delivered twice after the SIGKILL (at-least-once): {len(lines) - len(set(lines))}")
    assert set(lines) == set(sent)  # nothing lost, nothing foreign
    assert stack.status(state_dir)["up"]


def test_a_worker_started_by_hand_is_adopted_and_stopped_by_down(state_dir, own_processes):
    state, _ = stack.up(state_dir, REGION)
    kill_and_wait(state.firehose_pid)
    env = {**os.environ, **stack.local_env(state.endpoint, REGION)}
    log = state_dir / "logs" / "by-hand.log"
    with open(log, "wb") as out:
        by_hand = own_processes(  # as a learner would, from the state folder, with a relative path
            [sys.executable, "-m", "kinesis_lab.local.firehose", "--state-dir", "firehose"],
            cwd=state_dir, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_until(lambda: "local Firehose service started" in log.read_text(), "the hand-started worker to run")
    assert lab_pids(state_dir)["firehose"] == [by_hand.pid]
    assert f"the lab's firehose runs as pid {by_hand.pid}" in stack.status(state_dir)["firehose"]["note"]

    # a second worker on the same checkpoints would deliver everything twice: it refuses to start
    second = subprocess.run(
        [sys.executable, "-m", "kinesis_lab.local.firehose", "--state-dir", str(state_dir / "firehose")],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 3 and "another local Firehose worker delivers from" in second.stdout

    adopted, started = stack.up(state_dir, REGION)
    assert started == () and adopted.firehose_pid == by_hand.pid and adopted.moto_pid == state.moto_pid
    assert stack.status(state_dir)["up"]
    assert by_hand.pid in stack.down(state_dir)
    assert by_hand.wait(timeout=DEADLINE) == 0  # SIGTERM: delivered what it had, exited
    assert lab_pids(state_dir) == {"moto": [], "firehose": []}


# --- 3. a moto that dies -------------------------------------------------------------------------------
def test_a_dead_moto_is_reported_as_lost_state(state_dir, monkeypatch):
    monkeypatch.setenv("LAB_STATE_DIR", str(state_dir))
    monkeypatch.setenv("LAB_TARGET", "local")
    for key in stack.local_env("", REGION):  # connect points os.environ at this stack: restored after
        monkeypatch.setenv(key, os.environ.get(key, ""))
    cfg = load_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error", targets.LocalStateLost)
        first = targets.connect(cfg)  # starts the stack; nothing lost
    clients_for(first.endpoint)("s3").create_bucket(Bucket="learner-work")
    state = stack.read_state(state_dir)
    kill_and_wait(state.moto_pid)

    up = run_cli("up", env_extra={"LAB_STATE_DIR": str(state_dir)})
    assert up.returncode == 0, up.stderr
    assert "WARNING: the local AWS state was lost: run notebooks 01–04 again" in up.stdout
    new = stack.read_state(state_dir)
    assert new.moto_pid != state.moto_pid and new.stack_id != state.stack_id
    assert new.port == state.port  # kernels holding the old endpoint reach the new server
    assert any(note.startswith(stack.STATE_LOST) for note in stack.status(state_dir)["notes"])
    # this process worked with the old moto: connect says its state is gone, once
    with pytest.warns(targets.LocalStateLost, match="run notebooks 01–04 again"):
        again = targets.connect(cfg)
    assert again.endpoint == new.endpoint
    assert clients_for(again.endpoint)("s3").list_buckets()["Buckets"] == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", targets.LocalStateLost)
        targets.connect(cfg)

    # connect itself replacing a dead moto says so too
    kill_and_wait(new.moto_pid)
    with pytest.warns(targets.LocalStateLost, match="moto had stopped"):
        targets.connect(cfg)
    assert stack.status(state_dir)["up"]


# --- 4. health checks that scale ---------------------------------------------------------------------
def test_the_health_check_asks_a_cheap_route_not_moto_s_whole_state():
    seen: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            seen.append(self.path)
            body = json.dumps({"stack_id": "abc"}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        assert stack.moto_identity(f"http://127.0.0.1:{server.server_port}") == {"stack_id": "abc"}
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [HEALTH_PATH]


@pytest.mark.slow  # tens of seconds, no fixture says so
def test_a_moto_holding_many_records_and_busy_dumping_them_is_not_declared_dead(state_dir):
    state, _ = stack.up(state_dir, REGION)
    kinesis = clients_for(state.endpoint)("kinesis")
    kinesis.create_stream(StreamName="big", StreamModeDetails={"StreamMode": "ON_DEMAND"})
    row = json.dumps({"Country": "Chad", "Region": "Sub-Saharan Africa", "padding": "x" * 400})
    for start in range(0, 60_000, 500):
        kinesis.put_records(StreamName="big", Records=[{"Data": f"{row}{n}\n".encode(), "PartitionKey": str(n)}
                                                        for n in range(start, start + 500)])  # fmt: skip
    dumps: list[tuple[int, float]] = []

    def dump() -> None:  # what the old health check read, with a 1 s timeout
        began = time.monotonic()
        with urllib.request.urlopen(state.endpoint + "/moto-api/data.json", timeout=300) as resp:
            dumps.append((len(resp.read()), time.monotonic() - began))

    threads = [threading.Thread(target=dump) for _ in range(3)]
    for thread in threads:
        thread.start()
    checked = stack.status(state_dir)  # while moto serializes its whole state three times
    for thread in threads:
        thread.join(timeout=300)
    print("data.json: " + ", ".join(f"{size / 1e6:.0f} MB in {seconds:.1f} s" for size, seconds in dumps))
    assert checked["up"] and checked["moto"]["running"], checked
    again, started = stack.up(state_dir, REGION)
    assert started == () and again.moto_pid == state.moto_pid


# --- 5. concurrent lifecycle commands ---------------------------------------------------------------
def test_concurrent_up_and_down_leave_no_orphan(state_dir):
    env = {**os.environ, "LAB_STATE_DIR": str(state_dir)}
    cli = [sys.executable, "-m", "kinesis_lab.course.cli"]

    def together(*commands: str) -> list[subprocess.CompletedProcess]:
        running = [subprocess.Popen([*cli, c], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for c in commands]  # fmt: skip
        outputs = [p.communicate(timeout=300) for p in running]
        return [subprocess.CompletedProcess(p.args, p.returncode, *out) for p, out in zip(running, outputs, strict=True)]

    ups = together("up", "up", "up")
    assert [u.returncode for u in ups] == [0, 0, 0], [u.stderr for u in ups]
    state = stack.read_state(state_dir)
    assert sum("local stack up:" in u.stdout for u in ups) == 1  # one started it, the others found it
    assert all(state.endpoint in u.stdout for u in ups)
    assert lab_pids(state_dir) == {"moto": [state.moto_pid], "firehose": [state.firehose_pid]}

    for _ in range(2):
        results = together("down", "up")
        assert [r.returncode for r in results] == [0, 0], [r.stderr for r in results]
        state = stack.read_state(state_dir)
        expected = {"moto": [state.moto_pid], "firehose": [state.firehose_pid]} if state else {"moto": [], "firehose": []}
        assert lab_pids(state_dir) == expected  # every running process is recorded, none orphaned


# --- 6. a build folder the lab cannot write to ------------------------------------------------------
def one_line_error(call) -> str:
    with pytest.raises(lp.BuildFolderError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message and err.value.__cause__ is None and err.value.__suppress_context__
    return message


def test_a_build_folder_under_a_file_is_a_one_line_message(tmp_path, aws_clients):
    (tmp_path / "not-a-folder").write_text("a file where the build folder's parent should be")
    build = tmp_path / "not-a-folder" / "build"
    message = one_line_error(lambda: lp.run_pipeline(REPO / "databricks" / "pipeline", source_path=tmp_path,
                                                     build_dir=build, echo=None))  # fmt: skip
    assert message.startswith(f"cannot write to the build folder {build} (Not a directory): ")
    writable = tmp_path / "writable-build"
    (lp.lakehouse_dir(writable) / ".run.lock").mkdir(parents=True)  # the run lock cannot be opened
    message = one_line_error(lambda: lp.run_pipeline(REPO / "databricks" / "pipeline", source_path=tmp_path,
                                                     build_dir=writable, echo=None))  # fmt: skip
    assert message.startswith(f"cannot write to the build folder {writable} (Is a directory): ")
    message = one_line_error(lambda: update_summary(build, bronze_rows=1))  # what notebooks 04-09 write
    assert message.startswith(f"cannot write to the build folder {build} (Not a directory): ")
    demo = run_cli("demo", env_extra={"LAB_BUILD_DIR": str(build), "LAB_STATE_DIR": str(tmp_path / "state")})
    assert demo.returncode == 2 and demo.stderr.splitlines() == [
        f"kinesis-lab: error: cannot write to the build folder {build} (Not a directory): "
        "make it writable, or set LAB_BUILD_DIR to a folder you can write to"
    ]
    aws_clients("s3").create_bucket(Bucket="unwritable-mirror")
    mirror = lp.external_location_dir(build)
    message = one_line_error(lambda: lp.mirror_s3_prefix(aws_clients("s3"), "unwritable-mirror", "bronze/", mirror))
    assert message.startswith(f"cannot write to the build folder {mirror} (Not a directory): ")


def test_a_build_folder_without_write_permission_is_a_one_line_message(tmp_path):
    """Root ignores file modes, so as root the check runs in a child process as user nobody, on a
    folder nobody can reach but not write (pytest's own folders are private to their owner)."""
    base = Path(tempfile.mkdtemp(prefix="lab-unwritable-")) if os.geteuid() == 0 else tmp_path
    build = base / "build"
    (build / "lakehouse").mkdir(parents=True)
    code = (
        "import sys; from kinesis_lab.local import pipeline as lp\n"
        "try:\n"
        f"    lp.run_pipeline({str(REPO / 'databricks' / 'pipeline')!r}, source_path='/', build_dir={str(build)!r})\n"
        "except lp.BuildFolderError as exc:\n"
        "    print(exc)\n"
    )
    if os.geteuid() == 0:
        try:
            subprocess.run([sys.executable, "-c", "pass"], user=65534, group=65534, extra_groups=[], cwd="/",
                           check=True, capture_output=True, timeout=60)  # fmt: skip
        except (OSError, subprocess.CalledProcessError) as exc:
            shutil.rmtree(base)
            pytest.skip(f"root ignores file modes and user nobody cannot run {sys.executable} ({exc}); "
                        "test_a_build_folder_under_a_file_is_a_one_line_message covers the message")
        for folder in (base, build, build / "lakehouse"):
            folder.chmod(0o755)  # readable by nobody, writable only by root
        run_as = {"user": 65534, "group": 65534, "extra_groups": []}
    else:
        (build / "lakehouse").chmod(0o555)
        run_as = {}
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/",
                              env={**os.environ, "HOME": "/"}, **run_as)  # fmt: skip
    finally:
        (build / "lakehouse").chmod(0o755)
        if base != tmp_path:
            shutil.rmtree(base)
    assert done.stdout.strip() == (
        f"cannot write to the build folder {build} (Permission denied): "
        "make it writable, or set LAB_BUILD_DIR to a folder you can write to"
    ), done.stderr
