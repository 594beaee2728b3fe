"""Connecting to the chosen target. On ``local`` the only difference from AWS is the endpoint
(``AWS_ENDPOINT_URL``) and dummy credentials; every call after this is plain boto3.

On ``aws``, ``LAB_AWS_ENDPOINT_URL`` points the target at an AWS-compatible endpoint instead (LocalStack,
or a moto server in CI): everything else runs as on a real account, with the credentials you give."""

from __future__ import annotations

import os
from dataclasses import dataclass

import boto3

from kinesis_lab.cloud.config import LabConfig, load_config

COST_OPT_IN_VAR = "LAB_CONFIRM_AWS_COSTS"  # read by load_config (LabConfig.confirm_aws_costs)


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
    return None


def connect_account(cfg: LabConfig, confirm_aws_costs: bool | None = None,
                    endpoint: str | None = None) -> LabSession:
    """Learn the account behind the credentials; plain ``boto3.client(...)`` calls reach it from now on.
    Target aws needs the cost opt-in and uses AWS itself (or LAB_AWS_ENDPOINT_URL); on local, ``endpoint``
    is the local stack's, already set in the environment by ``kinesis_lab.connect``."""
    if not cfg.is_local:
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

