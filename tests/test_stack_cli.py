"""The `kinesis-lab` command as a learner uses it: real processes, real ports."""

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from waiting import wait_until

from kinesis_lab.local import stack

CLI = [sys.executable, "-m", "kinesis_lab.course.cli"]


def run_cli(*args, env_extra=None, check=False):
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([*CLI, *args], capture_output=True, text=True, env=env, timeout=120, check=check)


@pytest.fixture
def state_dir(private_stack_dir):
    return private_stack_dir


def test_up_status_down_leaves_no_process(state_dir):
    env = {"LAB_STATE_DIR": str(state_dir)}
    up = run_cli("up", env_extra=env)
    assert up.returncode == 0, up.stderr
    assert "local stack up: moto at http://127.0.0.1:" in up.stdout
    state = stack.read_state(state_dir)
    assert stack.pid_alive(state.moto_pid) and stack.pid_alive(state.firehose_pid)

    again = run_cli("up", env_extra=env)
    assert "already up" in again.stdout
    assert stack.read_state(state_dir).moto_pid == state.moto_pid  # idempotent: same processes

    status = json.loads(run_cli("status", "--json", env_extra=env).stdout)
    assert status["up"] is True and status["endpoint"] == state.endpoint

    env_file = (state_dir / "local.env").read_text()
    assert f"AWS_ENDPOINT_URL={state.endpoint}" in env_file
    # the env file is all boto3 needs
    values = dict(line.split("=", 1) for line in env_file.splitlines() if line and not line.startswith("#"))
    sts = boto3.client("sts", region_name="us-east-1", endpoint_url=values["AWS_ENDPOINT_URL"],
                       aws_access_key_id=values["AWS_ACCESS_KEY_ID"], aws_secret_access_key=values["AWS_SECRET_ACCESS_KEY"])
    assert sts.get_caller_identity()["Account"] == "123456789012"

    down = run_cli("down", env_extra=env)
    assert down.returncode == 0 and "local stack stopped" in down.stdout
    wait_until(lambda: not stack.pid_alive(state.moto_pid) and not stack.pid_alive(state.firehose_pid),
               "moto and the Firehose worker to exit after `down`")
    assert not (state_dir / "local.env").exists()
    assert "was not running" in run_cli("down", env_extra=env).stdout


def test_stack_listens_on_loopback_only(state_dir):
    state, _ = stack.up(state_dir, "us-east-1")
    with socket.socket() as s:
        s.settimeout(1)
        assert s.connect_ex(("127.0.0.1", state.port)) == 0
    hostname_ip = socket.gethostbyname(socket.gethostname())
    if not hostname_ip.startswith("127."):
        with socket.socket() as s:
            s.settimeout(1)
            assert s.connect_ex((hostname_ip, state.port)) != 0


def test_port_in_use_is_a_one_line_error(state_dir):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = run_cli("up", "--port", str(port), env_extra={"LAB_STATE_DIR": str(state_dir)})
    assert out.returncode == 2
    assert out.stderr.strip() == (
        f"kinesis-lab: error: port {port} on 127.0.0.1 is already in use: pick another with --port N, "
        "or omit --port to use a free one")


def test_unknown_target_is_a_one_line_error(state_dir):
    out = run_cli("up", "--target", "azure", env_extra={"LAB_STATE_DIR": str(state_dir)})
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "kinesis-lab: error: unknown target 'azure': use 'local' (moto on this machine) or 'aws' "
        "(set LAB_TARGET or the notebook's target parameter)"]


def test_aws_target_without_opt_in_is_refused(state_dir):
    out = run_cli("produce", "--target", "aws", "--dataset", "x.csv", env_extra={"LAB_CONFIRM_AWS_COSTS": ""})
    assert out.returncode == 2
    assert "LAB_CONFIRM_AWS_COSTS=1" in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_doctor_without_java_prints_the_fix(tmp_path):
    # a PATH with python but no java
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {"PATH": str(bindir), "JAVA_HOME": "", "LAB_STATE_DIR": str(tmp_path / "state")}
    out = run_cli("doctor", env_extra=env)
    assert out.returncode == 1
    assert "[FAIL] java         not found" in out.stdout
    assert "fix: install a JDK 17+" in out.stdout


def test_down_stops_only_recorded_pids(state_dir):
    # a process that is not the stack's survives `down`
    bystander = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stack.up(state_dir, "us-east-1")
        stack.down(state_dir)
        assert bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_half_dead_stack_restarts_only_the_dead_worker(state_dir):
    state, _ = stack.up(state_dir, "us-east-1")
    os.kill(state.firehose_pid, signal.SIGKILL)
    wait_until(lambda: not stack.pid_alive(state.firehose_pid), "the Firehose worker to die after SIGKILL")
    assert stack.status(state_dir)["up"] is False
    new_state, started = stack.up(state_dir, "us-east-1")
    assert started == ("firehose",) and new_state.firehose_pid != state.firehose_pid
    # moto (and the AWS state it holds) is kept: same process, same port, same stack
    assert (new_state.moto_pid, new_state.port, new_state.stack_id) == (state.moto_pid, state.port, state.stack_id)
    assert stack.status(state_dir)["up"] is True
    assert Path(state_dir / "local.env").is_file()
