"""Every setting of the lab, resolved in one place.

Precedence: explicit override (a notebook's papermill parameter) > environment variable > default.
Defaults follow the original course (stream ``jm-demo-kinesis-lab``, delivery stream
``salud-firehose-tos3``, role ``FirehoseToS3Role``, bucket stem ``jm-demo-s3-lab``).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
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
    "LAB_STATE_DIR": "state_dir",
    "LAB_BUILD_DIR": "build_dir",
    "LAB_AWS_ENDPOINT_URL": "aws_endpoint_url",
    "LAB_CONFIRM_AWS_COSTS": "confirm_aws_costs",
}
PATH_FIELDS = ("home", "state_dir", "build_dir")

DEFAULT_LOCAL_BUFFER_INTERVAL = 5  # seconds: the local stack is a classroom, not a bill
DEFAULT_AWS_BUFFER_INTERVAL = 60  # the original course's value


# The medallion layout, the same locally and on Databricks: one schema per layer, and every table name
# starts with its layer (bronze_events -> bronze). On Databricks the catalog tells the bundle's targets
# apart (dev: kinesis_lab, prod: kinesis_lab_prod); locally it is Spark's session catalog.
LAYER_SCHEMAS = ("bronze", "silver", "gold")
BRONZE_TABLE, SILVER_TABLE, QUARANTINE_TABLE = "bronze_events", "silver_events", "silver_quarantine"


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


class BuildFolderError(RuntimeError):
    """The build folder (or a folder in it) cannot be written: a one-line message naming it."""


def find_home(start: Path | None = None) -> Path:
    """The repository root (notebooks/, data/, aws-policy/, databricks/ live there), found one way:
    LAB_HOME if set, else the nearest folder holding pyproject.toml and notebooks/ from ``start`` (or the
    working folder) upwards, else from this package's own folder upwards (an editable install). A package
    installed from a wheel and used outside the repository needs LAB_HOME; without it the working folder
    is returned and what is missing there is reported where it is needed."""
    if os.environ.get("LAB_HOME"):
        return Path(os.environ["LAB_HOME"]).expanduser().resolve()
    here = (start or Path.cwd()).resolve()
    for origin in (here, Path(__file__).resolve().parent):
        for folder in (origin, *origin.parents):
            if (folder / "pyproject.toml").is_file() and (folder / "notebooks").is_dir():
                return folder
    return here


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
    # target aws only: an AWS-compatible endpoint (LocalStack, a moto server in CI) instead of AWS itself
    aws_endpoint_url: str | None = None
    confirm_aws_costs: bool = False  # target aws: the opt-in to create real, billed resources
    state_dir: Path | None = None  # the local stack's PIDs, logs, checkpoints, local.env (None: <home>/.lab)
    build_dir: Path | None = None  # run summary, pipeline tables, rendered files (None: <home>/build)

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
        object.__setattr__(self, "state_dir", Path(self.state_dir or self.home / ".lab"))
        object.__setattr__(self, "build_dir", Path(self.build_dir or self.home / "build"))

    # --- derived names -------------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return self.target == "local"

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
        d.update({name: str(d[name]) for name in PATH_FIELDS})
        return d

    def environment(self) -> dict[str, str]:
        """This configuration as the LAB_* variables a child process (a notebook's kernel) resolves it from."""
        values = self.as_dict()
        return {env: str(values[name]) for env, name in ENV_VARS.items()
                if values.get(name) not in (None, "", False)}


def _coerce(name: str, raw: str):
    if name in ("buffer_size_mb", "buffer_interval_seconds"):
        try:
            return int(raw)
        except ValueError as exc:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from exc
    if name in PATH_FIELDS:
        return Path(raw).expanduser()
    if name == "confirm_aws_costs":
        return raw.strip().lower() in ("1", "true", "yes")
    return raw


def profile_region() -> str | None:
    """The region of the AWS profile in use (``AWS_PROFILE`` or default, from ~/.aws/config), if any."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError
    except ImportError:  # a bare interpreter (no packages): no profile to read
        return None
    try:
        return boto3.Session().region_name
    except BotoCoreError:  # e.g. AWS_PROFILE names a profile that does not exist
        return None


def load_config(**overrides) -> LabConfig:
    """Resolve the configuration. ``overrides`` are notebook parameters; ``None`` means 'not given'.

    Region: the ``region`` parameter > LAB_REGION > AWS_REGION / AWS_DEFAULT_REGION > the AWS profile's
    region > us-east-1."""
    values: dict = {}
    for env, name in ENV_VARS.items():
        raw = os.environ.get(env)
        if raw not in (None, ""):
            values[name] = _coerce(name, raw)
    if "region" not in values:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            values["region"] = region
        elif overrides.get("region") in (None, ""):
            region = profile_region()
            if region:
                values["region"] = region
    unknown = set(overrides) - set(LabConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values.update({k: v for k, v in overrides.items() if v not in (None, "")})
    if isinstance(values.get("target"), str):
        values["target"] = values["target"].strip().lower()
    return LabConfig(**values)


@contextlib.contextmanager
def child_environment(cfg: LabConfig):
    """While inside, child processes (notebook kernels, the CLI) resolve ``cfg``: its LAB_* variables are
    set in this process's environment, and put back as they were on the way out."""
    wanted = cfg.environment()
    saved = {env: os.environ.get(env) for env in ENV_VARS}
    try:
        for env in ENV_VARS:
            os.environ.pop(env, None)
        os.environ.update(wanted)
        yield cfg
    finally:
        for env, value in saved.items():
            if value is None:
                os.environ.pop(env, None)
            else:
                os.environ[env] = value


def writable_folder(folder: str | Path, name: str | Path | None = None) -> Path:
    """Create ``folder`` if needed and check a file can be written in it; else BuildFolderError
    naming ``name`` (default: the folder)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as exc:
        raise unwritable(name or folder, exc) from None
    return folder


def unwritable(folder: str | Path, exc: OSError) -> BuildFolderError:
    return BuildFolderError(
        f"cannot write to the build folder {folder} ({exc.strerror or type(exc).__name__}): "
        "make it writable, or set LAB_BUILD_DIR to a folder you can write to"
    )
