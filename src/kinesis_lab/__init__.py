"""kinesis_lab: the small package behind the Kinesis -> Firehose -> S3 -> Databricks course.

Notebooks call boto3 and Spark directly; this package holds what is reused or must be tested.
"""

from kinesis_lab.cloud.config import LabConfig, load_config

__all__ = ["LabConfig", "connect", "load_config"]


def connect(cfg: LabConfig, start_stack: bool = True, confirm_aws_costs: bool | None = None):
    """Make plain ``boto3.client(...)`` calls reach the target (local stack or your account) and learn the
    account id: see ``kinesis_lab.local.targets.connect``."""
    from kinesis_lab.local.targets import connect as connect_target

    return connect_target(cfg, start_stack=start_stack, confirm_aws_costs=confirm_aws_costs)
__version__ = "0.1.0"
