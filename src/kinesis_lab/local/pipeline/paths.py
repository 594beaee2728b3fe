"""The build folder's layout, and what every part of the local pipeline shares.

Under ``build_dir``: ``external_location/`` (the mirror of the bucket) and ``lakehouse/`` (rendered
spec, ``warehouse/``, metastore, checkpoints, run logs, ``connect-server/``)."""

from __future__ import annotations

import json
from pathlib import Path


class PipelineError(RuntimeError):
    """The local pipeline run failed; the message carries the end of its log."""


def external_location_dir(build_dir: str | Path) -> Path:
    """Where the notebooks mirror the bucket (the local stand-in for the UC external location)."""
    return Path(build_dir) / "external_location"


def lakehouse_dir(build_dir: str | Path) -> Path:
    return Path(build_dir) / "lakehouse"


def warehouse_dir(build_dir: str | Path) -> Path:
    return lakehouse_dir(build_dir) / "warehouse"


def server_dir(build_dir: str | Path) -> Path:
    """``lakehouse/connect-server``: the server's discovery file (0600: it holds the auth token),
    pid file and logs (``logs/``)."""
    return lakehouse_dir(build_dir) / "connect-server"


def discovery_path(build_dir: str | Path) -> Path:
    """The discovery file of the build folder's server (pyspark's ``SPARK_LOCAL_CONNECT_DISCOVERY``):
    ``SPARK_LOCAL_CONNECT_DISCOVERY=<this> python -m pyspark.sql.connect.local_server --stop``
    stops the server too."""
    return server_dir(build_dir) / "discovery.json"


def read_json(path: Path) -> dict:
    """The JSON object in ``path``; {} if it is missing, unreadable or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
