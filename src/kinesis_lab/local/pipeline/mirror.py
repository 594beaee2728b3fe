"""The local "external location": a mirror of the Firehose prefix of the bucket.

Local Spark has no S3 filesystem, so ``mirror_s3_prefix`` copies what Firehose wrote into a local
folder (``external_location_dir``), incrementally; a manifest records what was copied and from which
bucket (``bucket_source``), so the mirror (and the pipeline's tables) follow the bucket."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from kinesis_lab.cloud.config import writable_folder
from kinesis_lab.cloud.prefixes import static_folder
from kinesis_lab.local.pipeline.paths import read_json


@dataclass(frozen=True)
class MirrorResult:
    new_objects: int  # copied by this call
    total_objects: int  # under the prefix in the bucket
    new_bytes: int
    total_bytes: int
    local_dir: Path  # the mirror root: object ``k`` is at ``local_dir / k``
    source_dir: Path  # ``local_dir / <static prefix>``: what the pipeline reads
    new_keys: tuple[str, ...] = ()
    emptied: int = 0  # files of an earlier bucket (or local stack) removed first


MANIFEST = ".mirror-manifest.json"
BUILT_FROM = "built-from.json"  # in lakehouse/: the bucket (bucket_source) of the last successful run


def bucket_source(s3_client, bucket: str) -> dict:
    """Who the bucket is: its name, creation date (a bucket created again has a new one) and, on the
    local stack, the id of the moto server holding it (new with every local stack)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from kinesis_lab.local import stack

    source: dict = {"bucket": bucket, "created": None, "stack_id": None}
    with contextlib.suppress(ClientError, BotoCoreError):  # e.g. no s3:ListAllMyBuckets on AWS
        for entry in s3_client.list_buckets().get("Buckets", []):
            if entry["Name"] == bucket:
                source["created"] = entry["CreationDate"].isoformat()
    endpoint = s3_client.meta.endpoint_url or ""
    if urlparse(endpoint).hostname in (stack.HOST, "localhost"):
        source["stack_id"] = (stack.moto_identity(endpoint) or {}).get("stack_id")
    return source


def same_source(a: dict | None, b: dict | None) -> bool:
    """Same bucket name and creation date, and same local stack where both are known (a busy moto
    that did not say who it is does not empty the mirror)."""
    if not a or not b:
        return False
    same_stack = a.get("stack_id") == b.get("stack_id") or None in (a.get("stack_id"), b.get("stack_id"))
    return (a["bucket"], a.get("created")) == (b["bucket"], b.get("created")) and same_stack


def _read_manifest(local_dir: Path) -> dict:
    """``{"source": bucket_source(...), "objects": {key: {"etag", "size"}}}``; an older manifest (only
    the objects) has no source."""
    data = read_json(local_dir / MANIFEST)
    return data if "objects" in data else {"source": None, "objects": data}


def _empty_mirror(local_dir: Path, objects: dict) -> int:
    """Delete the files the manifest lists (and the folders left empty); returns how many."""
    removed = 0
    for key in objects:
        with contextlib.suppress(FileNotFoundError):
            (local_dir / key).unlink()
            removed += 1
    for folder in sorted((p for p in local_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty
    return removed


def mirror_s3_prefix(
    s3_client, bucket: str, prefix: str, local_dir: str | Path, echo: Callable[[str], None] | None = print
) -> MirrorResult:
    """Copy the objects under ``prefix`` (a Firehose expression prefix is cut at its first ``!{``)
    to ``local_dir``, keeping the key layout. Incremental: an object is downloaded only if it was
    not copied before with the same ETag and size (recorded in ``local_dir/.mirror-manifest.json``)
    or its local copy is gone. Files appear atomically (written under a hidden name, then renamed),
    so a pipeline reading the folder never sees half a file.

    The mirror follows the bucket: the manifest records who the bucket is (``bucket_source``); when
    that changes (a new local stack, the bucket deleted and created again) the files copied before
    are deleted first (``echo`` says so) and the pipeline's next run rebuilds its tables."""
    local_dir = writable_folder(local_dir)
    manifest_path = local_dir / MANIFEST
    source = bucket_source(s3_client, bucket)
    previous = _read_manifest(local_dir)
    emptied = 0
    if not same_source(previous["source"], source):
        emptied = _empty_mirror(local_dir, previous["objects"])
        if emptied and echo is not None:
            echo(f"the mirror held {emptied} objects of an earlier bucket or local stack: deleted them first")
        previous = {"source": source, "objects": {}}
    manifest = previous["objects"]
    list_prefix = static_folder(prefix)
    new_keys: list[str] = []
    total_objects = total_bytes = new_bytes = 0
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=list_prefix):
        for obj in page.get("Contents", []):
            key, size, etag = obj["Key"], obj["Size"], obj.get("ETag", "").strip('"')
            if key.endswith("/"):  # a "folder" placeholder object
                continue
            total_objects += 1
            total_bytes += size
            target = local_dir / key
            if manifest.get(key) == {"etag": etag, "size": size} and target.exists():
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.part")
            s3_client.download_file(bucket, key, str(partial))
            os.replace(partial, target)
            manifest[key] = {"etag": etag, "size": size}
            new_keys.append(key)
            new_bytes += size
    tmp = manifest_path.with_name(MANIFEST + ".tmp")
    tmp.write_text(json.dumps({"source": source, "objects": manifest}, indent=1, sort_keys=True))
    os.replace(tmp, manifest_path)
    return MirrorResult(
        new_objects=len(new_keys),
        total_objects=total_objects,
        new_bytes=new_bytes,
        total_bytes=total_bytes,
        local_dir=local_dir,
        source_dir=local_dir / list_prefix,
        new_keys=tuple(new_keys),
        emptied=emptied,
    )


def mirror_source(source_path: str | Path) -> dict | None:
    """The bucket a mirrored folder comes from (``bucket_source``), from the manifest of the mirror it
    is in; None if it is not in a mirror (or an older one)."""
    for folder in (Path(source_path).resolve(), *Path(source_path).resolve().parents):
        if (folder / MANIFEST).is_file():
            return _read_manifest(folder)["source"]
    return None
