"""kinesis_lab: the small package behind the Kinesis -> Firehose -> S3 -> Databricks course.

Notebooks call boto3 and Spark directly; this package holds what is reused or must be tested.
"""

from kinesis_lab.config import LabConfig, load_config

__all__ = ["LabConfig", "load_config"]
__version__ = "0.1.0"
