"""The switch between the two targets, for ``kinesis_lab.connect``: on ``local`` it points boto3 at the local
stack (starting what does not run), on ``aws`` it makes sure no leftover local endpoint or dummy key is used.
Either way the rest is ``cloud.aws.connect_account``: the same code as on a real account."""

from __future__ import annotations

import os
import warnings

from kinesis_lab.cloud.aws import LabSession, connect_account, require_cost_opt_in
from kinesis_lab.cloud.config import LabConfig
from kinesis_lab.local import stack


def forget_local_endpoint() -> None:
    """On aws, never send requests to a leftover local endpoint or with the dummy keys."""
    endpoint = os.environ.get("AWS_ENDPOINT_URL", "")
    if stack.HOST in endpoint or "localhost" in endpoint:
        os.environ.pop("AWS_ENDPOINT_URL", None)
        for key, value in stack.DUMMY_CREDENTIALS.items():
            if os.environ.get(key) == value:
                os.environ.pop(key, None)


class LocalStateLost(UserWarning):
    """The local AWS state (buckets, streams, roles, records) this work relied on is gone."""


_stack_seen: dict[str, str] = {}  # state folder -> id of the local stack this process last connected to


def use_local_stack(cfg: LabConfig, start: bool = True) -> str:
    """Point this process's boto3 at the local stack (starting what does not run, if asked). Reads
    the stack's state each time, so a kernel follows a stack restarted elsewhere; warns
    (LocalStateLost) when the stack's moto is not the one this process used before, or had died and
    was just replaced. Returns the endpoint."""
    state = stack.read_state(cfg.state_dir) if stack.status(cfg.state_dir)["up"] else None
    started: tuple[str, ...] = ()
    if state is None:
        if not start:
            raise stack.StackError("the local stack is not running: start it with `kinesis-lab up` (or run notebook 00)")
        state, started = stack.up(cfg.state_dir, cfg.region)
    key = str(cfg.state_dir.resolve())
    before = _stack_seen.get(key)
    if "moto" in started and state.lost:
        lost = state.lost
    elif before and before != state.stack_id:
        lost = f"{stack.STATE_LOST} (this process used a local stack that stopped since; a new one runs at {state.endpoint})"
    else:
        lost = None
    if lost:
        warnings.warn(LocalStateLost(lost), stacklevel=3)
    _stack_seen[key] = state.stack_id
    os.environ.update(stack.local_env(state.endpoint, cfg.region))
    return state.endpoint


def connect(cfg: LabConfig, start_stack: bool = True, confirm_aws_costs: bool | None = None) -> LabSession:
    """Make plain ``boto3.client(...)`` calls reach the target, and learn the account id."""
    if cfg.is_local:
        return connect_account(cfg, endpoint=use_local_stack(cfg, start=start_stack))
    require_cost_opt_in(confirm_aws_costs, cfg)  # refused before anything changes
    forget_local_endpoint()
    return connect_account(cfg, confirm_aws_costs)
