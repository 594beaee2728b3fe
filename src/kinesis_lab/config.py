"""Every setting of the lab, resolved in one place.

Precedence: explicit override (a notebook's papermill parameter) > environment variable > default.
Defaults follow the original course (stream ``jm-demo-kinesis-lab``, delivery stream
``salud-firehose-tos3``, role ``FirehoseToS3Role``, bucket stem ``jm-demo-s3-lab``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

TARGETS = ("local", "aws")

# env var -> field name; the env var wins over the default, an explicit override wins over both
ENV_VARS = {
    "LAB_TARGET": "target",
    "LAB_REGION": "region",
    "LAB_STREAM_NAME": "stream_name",
    "LAB_DELIVERY_STREAM_NAME": "delivery_stream_name",
    "LAB_FIREHOSE_ROLE_NAME": "firehose_role_name",
    "LAB_UC_ROLE_NAME": "uc_role_name",
    "LAB_BUCKET_STEM": "bucket_stem",
    "LAB_BUCKET": "bucket",
    "LAB_S3_PREFIX": "s3_prefix",
    "LAB_ERROR_PREFIX": "error_prefix",
    "LAB_BUFFER_SIZE_MB": "buffer_size_mb",
    "LAB_BUFFER_INTERVAL_SECONDS": "buffer_interval_seconds",
    "LAB_COMPRESSION": "compression",
    "LAB_CATALOG": "catalog",
    "LAB_HOME": "home",
}

DEFAULT_LOCAL_BUFFER_INTERVAL = 5  # seconds: the local stack is a classroom, not a bill
DEFAULT_AWS_BUFFER_INTERVAL = 60  # the original course's value


# The medallion layout, the same locally and on Databricks: one schema per layer, and every table name
# starts with its layer (bronze_events -> bronze). On Databricks the catalog tells the bundle's targets
# apart (dev: kinesis_lab, prod: kinesis_lab_prod); locally it is Spark's session catalog.
LAYER_SCHEMAS = ("bronze", "silver", "gold")


def schema_of(table: str) -> str:
    """The layer schema a pipeline table is published to: ``silver_quarantine`` -> ``silver``."""
    layer = table.split("_", 1)[0]
    if layer not in LAYER_SCHEMAS:
        raise ValueError(f"{table!r} is not a pipeline table (its name must start with one of {', '.join(LAYER_SCHEMAS)})")
    return layer


def qualified_name(catalog: str, table: str) -> str:
    """``<catalog>.<layer>.<table>``, the name a pipeline table has in Unity Catalog."""
    return f"{catalog}.{schema_of(table)}.{table}"


class ConfigError(ValueError):
    """A setting has a value the lab cannot use; the message says how to fix it."""


def find_home(start: Path | None = None) -> Path:
    """The repository root: the nearest folder (from ``start`` or cwd upwards) holding pyproject.toml
    and notebooks/; falls back to the folder this package was installed from."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
            return folder
    return Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class LabConfig:
    target: str = "local"
    region: str = "us-east-1"
    stream_name: str = "jm-demo-kinesis-lab"
    delivery_stream_name: str = "salud-firehose-tos3"
    firehose_role_name: str = "FirehoseToS3Role"
    uc_role_name: str = "DatabricksUCRoleKinesisLab"
    bucket_stem: str = "jm-demo-s3-lab"
    bucket: str | None = None  # None: <stem>-<account-id>-<region>, made once the account is known
    s3_prefix: str = "bronze/ingestion_date=!{timestamp:yyyy/MM/dd}/"
    error_prefix: str = "errors/!{firehose:error-output-type}/ingestion_date=!{timestamp:yyyy/MM/dd}/"
    buffer_size_mb: int = 1
    buffer_interval_seconds: int | None = None  # None: 5 s on local, 60 s on aws
    compression: str = "UNCOMPRESSED"
    catalog: str = "kinesis_lab"
    home: Path = field(default_factory=find_home)
    project_tag: str = "kinesis-lab"

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConfigError(
                f"unknown target {self.target!r}: use 'local' (moto on this machine) or 'aws' "
                "(set LAB_TARGET or the notebook's target parameter)"
            )
        if self.compression not in ("UNCOMPRESSED", "GZIP"):
            raise ConfigError(f"compression {self.compression!r} is not supported here: use UNCOMPRESSED or GZIP")
        if self.buffer_interval_seconds is None:
            default = DEFAULT_LOCAL_BUFFER_INTERVAL if self.target == "local" else DEFAULT_AWS_BUFFER_INTERVAL
            object.__setattr__(self, "buffer_interval_seconds", default)
        object.__setattr__(self, "home", Path(self.home))

    # --- derived names -------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.target == "local"

    @property
    def state_dir(self) -> Path:
        """Where the local stack keeps PIDs, logs, checkpoints and ``local.env``."""
        return Path(os.environ.get("LAB_STATE_DIR") or self.home / ".lab")

    @property
    def build_dir(self) -> Path:
        return Path(os.environ.get("LAB_BUILD_DIR") or self.home / "build")

    @property
    def log_group(self) -> str:
        return f"/aws/kinesisfirehose/{self.delivery_stream_name}"

    @property
    def tags(self) -> dict[str, str]:
        """Tags put on everything the lab creates; teardown deletes only what carries them."""
        return {"project": self.project_tag, "course": "kinesis-firehose-s3-databricks"}

    def bucket_name(self, account_id: str) -> str:
        """Explicit LAB_BUCKET, else a globally unique ``<stem>-<account>-<region>``."""
        if self.bucket:
            return self.bucket
        return f"{self.bucket_stem}-{account_id}-{self.region}"

    def shown(self, path: Path) -> str:
        """A path as notebooks print it: relative to the repository when inside it."""
        path = Path(path)
        return str(path.relative_to(self.home)) if path.is_relative_to(self.home) else str(path)

    def with_overrides(self, **overrides) -> LabConfig:
        return replace(self, **{k: v for k, v in overrides.items() if v is not None})

    def as_dict(self) -> dict:
        d = asdict(self)
        d["home"] = str(self.home)
        return d


def _coerce(name: str, raw: str):
    if name in ("buffer_size_mb", "buffer_interval_seconds"):
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if name == "home":
        return Path(raw)
    return raw


def load_config(**overrides) -> LabConfig:
    """Resolve the configuration. ``overrides`` are notebook parameters; ``None`` means 'not given'."""
    values: dict = {}
    for env, name in ENV_VARS.items():
        raw = os.environ.get(env)
        if raw not in (None, ""):
            values[name] = _coerce(name, raw)
    if "region" not in values:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
    unknown = set(overrides) - set(LabConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    if isinstance(values.get("target"), str):
        values["target"] = values["target"].strip().lower()
    return LabConfig(**values)
