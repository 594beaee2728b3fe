"""Test-only stand-ins for what a Databricks notebook gets from the workspace and this machine cannot have.

- ``UnityCatalogAPI``: the Unity Catalog REST API the databricks-sdk calls, an HTTP server on 127.0.0.1.
  Each request's method, path and JSON body is checked against the API's request fields (as documented and
  as the SDK's ``service/catalog.py`` sends them: ``aws_iam_role`` takes ``role_arn`` only, ``external_id``
  and ``unity_catalog_iam_arn`` are output only); anything else is a problem the test reports.
  Validation answers from IAM, as Unity Catalog does: the stand-in's UC master principal (an IAM user of the
  local moto stack, ``UCMaster``) really assumes the credential's role with the credential's external id
  (``sts:ExternalId``) and lists / reads the URL as that role. A trust policy without that id fails validation,
  and location creation, which validates unless ``skip_validation``, is refused with PERMISSION_DENIED. Without
  a ``UCMaster`` every check FAILs: the stand-in never says yes on its own.
- ``notebook_globals``: what the kernel's IPython startup file puts in the notebook, ``dbutils`` (widgets
  only) and ``spark``: a Spark Connect session on the local pipeline's server and metastore, so its tables are
  read as ``spark_catalog.<layer>.<table>`` (open-source Spark has one session catalog, ``spark_catalog``: the
  tests pass it as the notebooks' ``catalog``); ``dbutils.notebook.exit`` ends the run as Databricks does.
  The SQL that only Unity Catalog knows (CREATE CATALOG, external locations, GRANT READ FILES, LIST) is
  recorded and answered here; everything else runs in Spark.
"""

from __future__ import annotations

import json
import os
import re
import threading
import urllib.request
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

API = "/api/2.1/unity-catalog"
EXTERNAL_ID = "6b7a1f0e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
UC_MASTER_ROLE_ARN = "arn:aws:iam::414351767826:role/unity-catalog-prod-UCMasterRole-14S5ZJVKOTYTL"

# request fields per endpoint: name -> type, or a dict for a nested object
AWS_IAM_ROLE_REQUEST = {"role_arn": str}
OTHER_CLOUDS = {"azure_managed_identity": dict, "azure_service_principal": dict, "cloudflare_api_token": dict,
                "databricks_gcp_service_account": dict}
CREDENTIAL_CREATE = {"name": str, "comment": str, "read_only": bool, "skip_validation": bool,
                     "aws_iam_role": AWS_IAM_ROLE_REQUEST, **OTHER_CLOUDS}
CREDENTIAL_UPDATE = {"new_name": str, "comment": str, "owner": str, "read_only": bool, "skip_validation": bool,
                     "force": bool, "isolation_mode": str, "aws_iam_role": AWS_IAM_ROLE_REQUEST, **OTHER_CLOUDS}
VALIDATE = {"storage_credential_name": str, "external_location_name": str, "url": str, "read_only": bool,
            "aws_iam_role": AWS_IAM_ROLE_REQUEST, **OTHER_CLOUDS}
LOCATION_FIELDS = {"url": str, "credential_name": str, "comment": str, "read_only": bool, "skip_validation": bool,
                   "enable_file_events": bool, "file_event_queue": dict, "encryption_details": dict, "fallback": bool}
LOCATION_CREATE = {"name": str, **LOCATION_FIELDS}
LOCATION_UPDATE = {"new_name": str, "owner": str, "force": bool, "isolation_mode": str, **LOCATION_FIELDS}


def field_problems(body, fields: dict, where: str = "body") -> list[str]:
    """Fields not in the API's request object, or of the wrong JSON type (nested objects too)."""
    if not isinstance(body, dict):
        return [f"{where} is not a JSON object"]
    problems = []
    for key, value in body.items():
        if key not in fields:
            problems.append(f"{where}: unknown field {key!r}")
        elif isinstance(fields[key], dict):
            problems += field_problems(value, fields[key], f"{where}.{key}")
        elif not isinstance(value, fields[key]) or (fields[key] is not bool and isinstance(value, bool)):
            problems.append(f"{where}.{key}: {type(value).__name__}, expected {fields[key].__name__}")
    return problems


class UCMaster:
    """Databricks' UC master role, stood in for by an IAM user of the local stack (moto cannot hold
    Databricks' account): its keys, and the stack's endpoint. IAM enforcement must be on for the role's
    trust policy to be checked."""

    def __init__(self, endpoint: str, access_key_id: str, secret_access_key: str, region: str = "us-east-1"):
        import boto3

        self.endpoint, self.region = endpoint, region
        self.session = boto3.Session(aws_access_key_id=access_key_id, aws_secret_access_key=secret_access_key,
                                     region_name=region)

    def checks(self, role_arn: str, external_id: str, url: str) -> dict[str, tuple[bool, str]]:
        """READ and LIST of ``url`` as ``role_arn`` assumed with ``external_id``: operation -> (passed, message)."""
        import boto3
        from botocore.exceptions import ClientError

        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        try:
            creds = self.session.client("sts", endpoint_url=self.endpoint).assume_role(
                RoleArn=role_arn, RoleSessionName="databricks-uc-validation", ExternalId=external_id)["Credentials"]
        except ClientError as exc:
            message = f"Failed to get credentials: AWS IAM role {role_arn} cannot be assumed ({exc})"
            return {"READ": (False, message), "LIST": (False, message)}
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                          aws_access_key_id=creds["AccessKeyId"], aws_secret_access_key=creds["SecretAccessKey"],
                          aws_session_token=creds["SessionToken"])
        results = {}
        try:
            listed = s3.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1).get("Contents", [])
            results["LIST"] = (True, "")
        except ClientError as exc:
            listed, results["LIST"] = [], (False, f"AWS IAM role does not have LIST permissions on url {url}: {exc}")
        try:
            if listed:
                s3.get_object(Bucket=bucket, Key=listed[0]["Key"], Range="bytes=0-0")
            results["READ"] = (results["LIST"][0] or bool(listed), "" if results["LIST"][0] else "nothing listed")
        except ClientError as exc:
            results["READ"] = (False, f"AWS IAM role does not have READ permissions on url {url}: {exc}")
        return results


class UnityCatalogAPI:
    """Storage credentials, external locations and their validation, as the SDK's calls reach them."""

    def __init__(self, token: str = "dapi-test-token", uc_master: UCMaster | None = None,
                 external_id: str = EXTERNAL_ID):
        self.token, self.uc_master, self.external_id = token, uc_master, external_id
        self.credentials: dict[str, dict] = {}
        self.locations: dict[str, dict] = {}
        self.requests: list[tuple[str, str, dict | None]] = []  # (method, path, JSON body)
        self.problems: list[str] = []
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()

    def api_requests(self) -> list[tuple[str, str, dict | None]]:
        """The Unity Catalog calls, in order (not the SDK's host-metadata probe)."""
        return [r for r in self.requests if r[1].startswith(API)]

    # --- the endpoints --------------------------------------------------------------------------------
    def answer(self, method: str, path: str, body: dict | None, authorization: str | None) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((method, path, body))
            if path == "/.well-known/databricks-config":  # the SDK's host-metadata probe: none here
                return 404, {"error_code": "NOT_FOUND", "message": "no host metadata"}
            if authorization != f"Bearer {self.token}":
                self.problems.append(f"{method} {path}: Authorization {authorization!r}")
                return 401, {"error_code": "UNAUTHENTICATED", "message": "no valid token"}
            route = path.removeprefix(API)
            for pattern, handler in self._routes():
                match = re.fullmatch(pattern, route)
                if match and handler.__name__.split("_")[0] == method.lower():
                    return handler(body, *match.groups())
            self.problems.append(f"{method} {path}: not an endpoint of the Unity Catalog API the lab uses")
            return 404, {"error_code": "ENDPOINT_NOT_FOUND", "message": f"{method} {path}"}

    def _routes(self):
        name = r"/([^/?]+)"
        return [
            ("/storage-credentials", self.post_credential),
            (f"/storage-credentials{name}", self.get_credential),
            (f"/storage-credentials{name}", self.patch_credential),
            ("/validate-storage-credentials", self.post_validate),
            ("/external-locations", self.post_location),
            (f"/external-locations{name}", self.get_location),
            (f"/external-locations{name}", self.patch_location),
        ]

    def _checked(self, what: str, body, fields: dict, required=()) -> bool:
        problems = field_problems(body, fields, what) if body is not None else [f"{what}: no JSON body"]
        problems += [f"{what}: missing {key!r}" for key in required if key not in (body or {})]
        self.problems += problems
        return not problems

    @staticmethod
    def _missing(kind: str, name: str) -> tuple[int, dict]:
        code = "STORAGE_CREDENTIAL" if kind == "credential" else "EXTERNAL_LOCATION"
        label = "Storage Credential" if kind == "credential" else "External Location"
        return 404, {"error_code": f"{code}_DOES_NOT_EXIST", "message": f"{label} '{name}' does not exist."}

    def get_credential(self, body, name):
        if body is not None:
            self.problems.append(f"GET storage credential {name}: a body {body}")
        return (200, self.credentials[name]) if name in self.credentials else self._missing("credential", name)

    def post_credential(self, body, *_):
        if not self._checked("create storage credential", body, CREDENTIAL_CREATE, ("name", "aws_iam_role")):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}
        if body["name"] in self.credentials:
            return 409, {"error_code": "STORAGE_CREDENTIAL_ALREADY_EXISTS", "message": body["name"]}
        if "role_arn" not in body["aws_iam_role"]:
            self.problems.append("create storage credential: aws_iam_role without role_arn")
        info = {"name": body["name"], "id": str(uuid.uuid4()), "full_name": body["name"],
                "owner": "learner@example.com", "read_only": body.get("read_only", False),
                "comment": body.get("comment"), "isolation_mode": "ISOLATION_MODE_OPEN",
                "aws_iam_role": {"role_arn": body["aws_iam_role"]["role_arn"], "external_id": self.external_id,
                                 "unity_catalog_iam_arn": UC_MASTER_ROLE_ARN}}
        self.credentials[body["name"]] = info
        return 200, info

    def patch_credential(self, body, name):
        if not self._checked(f"update storage credential {name}", body, CREDENTIAL_UPDATE):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}
        if name not in self.credentials:
            return self._missing("credential", name)
        info = self.credentials[name]
        info.update({k: v for k, v in body.items() if k in ("comment", "read_only", "owner")})
        if "aws_iam_role" in body:
            info["aws_iam_role"]["role_arn"] = body["aws_iam_role"]["role_arn"]
        return 200, info

    def _read_checks(self, credential: dict, url: str) -> dict[str, tuple[bool, str]]:
        """READ and LIST of ``url`` with the credential, answered from IAM (all FAIL without a UC master)."""
        if self.uc_master is None:
            return {op: (False, "the stand-in has no UC master principal to validate with") for op in ("READ", "LIST")}
        role = credential["aws_iam_role"]
        return self.uc_master.checks(role["role_arn"], role["external_id"], url)

    def post_validate(self, body, *_):
        if not self._checked("validate storage credential", body, VALIDATE, ("url",)):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}
        name = body.get("storage_credential_name")
        if name not in self.credentials:
            return self._missing("credential", str(name))
        if not body["url"].startswith("s3://"):
            self.problems.append(f"validate: url {body['url']} is not an s3:// URL")
        location = body.get("external_location_name")
        if location is not None and location not in self.locations:
            return self._missing("location", location)
        checks = self._read_checks(self.credentials[name], body["url"])
        results = [{"operation": op, "result": "PASS" if checks[op][0] else "FAIL", "message": checks[op][1]}
                   for op in ("READ", "LIST")]
        if not body.get("read_only"):  # the lab's role may only read: a read-write validation fails the writes
            results += [{"operation": op, "result": "FAIL", "message": "AccessDenied"} for op in ("WRITE", "DELETE")]
        return 200, {"isDir": True, "results": results}

    def get_location(self, body, name):
        if body is not None:
            self.problems.append(f"GET external location {name}: a body {body}")
        return (200, self.locations[name]) if name in self.locations else self._missing("location", name)

    def post_location(self, body, *_):
        if not self._checked("create external location", body, LOCATION_CREATE, ("name", "url", "credential_name")):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}
        if body["credential_name"] not in self.credentials:
            return self._missing("credential", body["credential_name"])
        if body["name"] in self.locations:
            return 409, {"error_code": "EXTERNAL_LOCATION_ALREADY_EXISTS", "message": body["name"]}
        if not body.get("skip_validation"):  # Unity Catalog validates the credential on the URL first
            failed = [m for ok, m in self._read_checks(self.credentials[body["credential_name"]], body["url"]).values()
                      if not ok]
            if failed:
                return 403, {"error_code": "PERMISSION_DENIED", "message": failed[0]}
        info = {"name": body["name"], "url": body["url"], "credential_name": body["credential_name"],
                "read_only": body.get("read_only", False), "comment": body.get("comment"),
                "enable_file_events": body.get("enable_file_events", True), "owner": "learner@example.com",
                "credential_id": self.credentials[body["credential_name"]]["id"]}
        self.locations[body["name"]] = info
        return 200, info

    def patch_location(self, body, name):
        if not self._checked(f"update external location {name}", body, LOCATION_UPDATE):
            return 400, {"error_code": "INVALID_PARAMETER_VALUE", "message": "bad request"}
        if name not in self.locations:
            return self._missing("location", name)
        self.locations[name].update({k: v for k, v in body.items() if k in LOCATION_FIELDS})
        return 200, self.locations[name]

    def _handler(self):
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    api.problems.append(f"{self.command} {self.path}: body is not JSON: {raw[:80]!r}")
                    body = None
                status, answer = api.answer(self.command, self.path, body, self.headers.get("Authorization"))
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _serve

            def log_message(self, *args):
                pass

        return Handler


# --- inside the notebook's kernel -------------------------------------------------------------------------
SETTINGS_VAR = "LAB_TEST_DATABRICKS_NOTEBOOK"  # JSON: widgets, spark_conf, log, s3_mirror
UC_ONLY_SQL = re.compile(
    r"\s*(CREATE\s+CATALOG|CREATE\s+EXTERNAL\s+LOCATION|GRANT\s+READ\s+FILES\s+ON\s+EXTERNAL\s+LOCATION"
    r"|DESCRIBE\s+EXTERNAL\s+LOCATION|LIST\s+')",
    re.IGNORECASE,
)


class _Log:
    def __init__(self, path: str):
        self.path = path

    def write(self, **entry) -> None:
        with open(self.path, "a") as handle:
            handle.write(json.dumps(entry) + "\n")


class Widgets:
    """``dbutils.widgets`` as notebooks use it: ``text`` defines a widget, ``get`` reads its value (the one
    given to the test, as a learner types it or a job passes it; else the default)."""

    def __init__(self, values: dict[str, str], log: _Log):
        self._values, self._defaults, self._log = dict(values), {}, log

    def text(self, name: str, defaultValue: str, label: str | None = None) -> None:
        if not isinstance(defaultValue, str):
            raise TypeError(f"widget {name}: defaultValue must be a string, not {type(defaultValue).__name__}")
        self._defaults[name] = defaultValue
        self._log.write(kind="widget", name=name, default=defaultValue)

    def get(self, name: str) -> str:
        if name not in self._defaults:
            raise ValueError(f"InputWidgetNotDefined: No input widget named {name} is defined")
        return self._values.get(name, self._defaults[name])


class Notebook:
    """``dbutils.notebook.exit(value)`` as in a Databricks notebook: the run ends there, successfully, and the
    cells after it do not run (an input transformer empties them). Unlike Databricks, the rest of the calling
    cell still runs (the kernel would report anything raised as an error): notebooks call it last in a cell."""

    def __init__(self, log: _Log):
        self._log = log

    def exit(self, value: str) -> None:
        from IPython import get_ipython

        self._log.write(kind="exit", value=str(value))
        get_ipython().input_transformers_cleanup.append(lambda lines: [])
        print(f"Notebook exited: {value}")


class DbUtils:
    def __init__(self, widgets: Widgets, log: _Log):
        self.widgets = widgets
        self.notebook = Notebook(log)


class SparkStandIn:
    """The notebook's ``spark``: a local session; Unity-Catalog-only SQL is recorded and answered here."""

    def __init__(self, session, log: _Log, s3_mirror: dict[str, str]):
        self._session, self._log, self._s3_mirror = session, log, s3_mirror

    def __getattr__(self, name):
        return getattr(self._session, name)

    def sql(self, statement: str, *args, **kwargs):
        if not UC_ONLY_SQL.match(statement):
            self._log.write(kind="sql", by="spark", statement=statement)
            return self._session.sql(statement, *args, **kwargs)
        self._log.write(kind="sql", by="stand-in", statement=statement)
        if statement.lstrip().upper().startswith("LIST"):
            return self._list(re.search(r"'([^']+)'", statement).group(1))
        if statement.lstrip().upper().startswith("DESCRIBE"):
            name = re.search(r"LOCATION\s+`?([^`\s]+)`?", statement, re.IGNORECASE).group(1)
            return self._describe_location(name)
        return self._session.createDataFrame([], "result STRING")

    def _local(self, url: str) -> Path:
        for prefix, folder in self._s3_mirror.items():
            if url.startswith(prefix):
                return Path(folder) / url.removeprefix(prefix)
        raise RuntimeError(f"[UNITY_CATALOG] no external location covers {url}")

    def _list(self, url: str):
        """What LIST answers: the objects and folders directly under the URL (not recursive)."""
        rows = []
        for entry in sorted(self._local(url).iterdir()):
            if entry.name.startswith("."):
                continue
            stat = entry.stat()
            name = entry.name + ("/" if entry.is_dir() else "")
            rows.append((url.rstrip("/") + "/" + name, name, 0 if entry.is_dir() else stat.st_size,
                         int(stat.st_mtime * 1000)))
        return self._session.createDataFrame(rows, "path STRING, name STRING, size BIGINT, modification_time BIGINT")

    def _describe_location(self, name: str):
        """DESCRIBE EXTERNAL LOCATION reads the same metastore as the REST API: ask the API stand-in."""
        request = urllib.request.Request(f"{os.environ['DATABRICKS_HOST']}{API}/external-locations/{name}",
                                         headers={"Authorization": f"Bearer {os.environ['DATABRICKS_TOKEN']}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            info = json.loads(answer.read())
        row = (info["name"], info["url"], info["credential_name"], bool(info.get("read_only")), info.get("comment"),
               info.get("owner"), datetime.now(UTC).replace(tzinfo=None))
        return self._session.createDataFrame(
            [row], "name STRING, url STRING, credential_name STRING, read_only BOOLEAN, comment STRING, "
                   "owner STRING, created_at TIMESTAMP")


def notebook_globals(settings: dict) -> dict:
    """``spark`` and ``dbutils`` for a notebook run as inside Databricks. ``spark`` is a Spark Connect session
    (as on serverless compute and standard access mode, where no JVM runs beside the notebook) on the local
    pipeline's server, which holds the metastore the pipeline wrote; runtime settings only (static ones are
    the server's)."""
    from pyspark.sql import SparkSession

    log = _Log(settings["log"])
    os.environ["SPARK_CONNECT_AUTHENTICATE_TOKEN"] = settings["token"]
    session = SparkSession.builder.remote(settings["remote"]).getOrCreate()
    for key, value in settings["spark_conf"].items():
        session.conf.set(key, value)
    return {"spark": SparkStandIn(session, log, settings["s3_mirror"]),
            "dbutils": DbUtils(Widgets(settings["widgets"], log), log)}


STARTUP_FILE = f"""# IPython startup file written by tests/test_databricks_mode.py: the notebook's `spark` and `dbutils`
import json as _json, os as _os, sys as _sys
_sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
from databricks_standins import notebook_globals as _notebook_globals
globals().update(_notebook_globals(_json.loads(_os.environ[{SETTINGS_VAR!r}])))
"""


def write_ipython_startup(ipython_dir: Path) -> Path:
    """An IPYTHONDIR whose default profile starts the stand-ins in every kernel launched with it."""
    startup = ipython_dir / "profile_default" / "startup" / "00-databricks-standins.py"
    startup.parent.mkdir(parents=True, exist_ok=True)
    startup.write_text(STARTUP_FILE)
    return startup
