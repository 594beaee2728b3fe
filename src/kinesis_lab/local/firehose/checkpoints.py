"""Per-shard read positions of each delivery stream, kept in one JSON file.

A delivery stream is keyed by ``<DeliveryStreamARN>@<CreateTimestamp>``: a delivery stream deleted and
created again with the same name (or a moto reset) gets a new key, so stale positions are never reused.
The file is replaced atomically (write a temporary file, then ``os.replace``), so a crash leaves
either the old or the new version, never half of one.
"""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

FILE_NAME = "checkpoints.json"


def stream_key(delivery_stream_arn: str, create_timestamp: datetime) -> str:
    return f"{delivery_stream_arn}@{create_timestamp.isoformat()}"


class CheckpointStore:
    """``{stream key: {shard id: last delivered sequence number}}`` persisted in ``<state_dir>/checkpoints.json``."""

    def __init__(self, state_dir: Path):
        self.path = Path(state_dir) / FILE_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, dict[str, str]] = self._load()

    def _load(self) -> dict[str, dict[str, str]]:
        try:
            raw = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ValueError(
                f"checkpoint file {self.path} is not valid JSON ({exc}): delete it to start over"
            ) from exc
        return {key: dict(value.get("shards", {})) for key, value in raw.get("delivery_streams", {}).items()}

    def get(self, key: str, shard_id: str) -> str | None:
        return self._data.get(key, {}).get(shard_id)

    def shards(self, key: str) -> dict[str, str]:
        return dict(self._data.get(key, {}))

    def keys(self) -> list[str]:
        return list(self._data)

    def advance(self, key: str, positions: dict[str, str]) -> None:
        """Record that every record up to these sequence numbers is in S3 (call after the write)."""
        if not positions:
            return
        self._data.setdefault(key, {}).update(positions)
        self._save()

    def forget(self, key: str) -> None:
        if self._data.pop(key, None) is not None:
            self._save()

    def _save(self) -> None:
        body = {"version": 1, "delivery_streams": {k: {"shards": v} for k, v in self._data.items()}}
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            json.dump(body, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
