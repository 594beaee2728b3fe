"""Connecting to the chosen target. On ``local`` the only difference from AWS is the endpoint
(``AWS_ENDPOINT_URL``) and dummy credentials; every call after this is plain boto3.

On ``aws``, ``LAB_AWS_ENDPOINT_URL`` points the target at an AWS-compatible endpoint instead (LocalStack,
or a moto server in CI): everything else runs as on a real account, with the credentials you give."""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import boto3

from kinesis_lab import stack
from kinesis_lab.config import LabConfig, load_config

COST_OPT_IN_VAR = "LAB_CONFIRM_AWS_COSTS"  # read by load_config (LabConfig.confirm_aws_costs)

ALREADY_EXISTS_CODES = {"EntityAlreadyExists", "ResourceInUseException", "BucketAlreadyOwnedByYou"}


class CostOptInRequired(RuntimeError):
    """Creating real (paid) AWS resources needs an explicit opt-in."""


def partition_of(arn: str) -> str:
    """``aws``, ``aws-cn``, ``aws-us-gov``...: the second field of an ARN."""
    return arn.split(":")[1]


def arn(partition: str, service: str, region: str, account_id: str, resource: str) -> str:
    return f"arn:{partition}:{service}:{region}:{account_id}:{resource}"


@dataclass(frozen=True)
class LabSession:
    cfg: LabConfig
    account_id: str
    bucket: str
    endpoint: str | None  # None on aws (unless LAB_AWS_ENDPOINT_URL)
    partition: str = "aws"  # from the caller's ARN: aws-cn, aws-us-gov elsewhere

    def client(self, service: str):
        return boto3.client(service, region_name=self.cfg.region)

    @property
    def stream_arn(self) -> str:
        return arn(self.partition, "kinesis", self.cfg.region, self.account_id, f"stream/{self.cfg.stream_name}")

    @property
    def firehose_role_arn(self) -> str:
        return arn(self.partition, "iam", "", self.account_id, f"role/{self.cfg.firehose_role_name}")

    @property
    def uc_role_arn(self) -> str:
        return arn(self.partition, "iam", "", self.account_id, f"role/{self.cfg.uc_role_name}")

    @property
    def bucket_arn(self) -> str:
        return arn(self.partition, "s3", "", "", self.bucket)


def require_cost_opt_in(confirm: bool | None = None, cfg: LabConfig | None = None) -> None:
    """``confirm`` (a notebook parameter) or the configuration's LAB_CONFIRM_AWS_COSTS opts in."""
    if not (confirm or (cfg.confirm_aws_costs if cfg else load_config().confirm_aws_costs)):
        raise CostOptInRequired(
            "target 'aws' creates real resources that cost money: set LAB_CONFIRM_AWS_COSTS=1 "
            "(or the notebook parameter confirm_aws_costs=True) to go ahead, or use target 'local'"
        )


def _use_aws_endpoint(cfg: LabConfig) -> str | None:
    """LAB_AWS_ENDPOINT_URL given: every boto3 client goes there. Otherwise AWS itself."""
    if cfg.aws_endpoint_url:
        os.environ["AWS_ENDPOINT_URL"] = cfg.aws_endpoint_url
        return cfg.aws_endpoint_url
    _forget_local_endpoint()
    return None


def _forget_local_endpoint() -> None:
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
    endpoint = None
    if cfg.is_local:
        endpoint = use_local_stack(cfg, start=start_stack)
    else:
        require_cost_opt_in(confirm_aws_costs, cfg)
        endpoint = _use_aws_endpoint(cfg)
    identity = boto3.client("sts", region_name=cfg.region).get_caller_identity()
    account_id = identity["Account"]
    return LabSession(cfg=cfg, account_id=account_id, bucket=cfg.bucket_name(account_id), endpoint=endpoint,
                      partition=partition_of(identity["Arn"]))


def error_code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


def error_message(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Message", "")


def is_already_exists(exc: Exception) -> bool:
    return error_code(exc) in ALREADY_EXISTS_CODES
