"""Run moto's HTTP server (AWS APIs on 127.0.0.1) without a log line per request, with one
performance fix for large Kinesis loads (same behaviour, no quadratic cost), and a cheap health
route (``HEALTH_PATH``) that answers who this server is without touching the AWS state it holds."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys

HEALTH_PATH = "/kinesis-lab/health"


def speed_up_kinesis_shards() -> None:
    """moto 5.2 copies all of a shard's keys to find its last sequence number on every put: quadratic on
    big loads. Same answers in O(1) (records is an insertion-ordered dict keyed by sequence number)."""
    from moto.kinesis.models import Shard

    Shard.get_max_sequence_number = lambda self: next(reversed(self.records), 0)
    Shard.get_min_sequence_number = lambda self: next(iter(self.records), 0)


def with_health_route(app, identity: dict):
    """``GET HEALTH_PATH`` -> ``identity`` as JSON (constant time); everything else goes to moto."""
    body = json.dumps(identity).encode()

    def wrapped(environ, start_response):
        if environ.get("PATH_INFO") == HEALTH_PATH:
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return app(environ, start_response)

    return wrapped


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--state-dir", required=True, help="the lab's state folder (identifies this server)")
    parser.add_argument("--stack-id", required=True, help="random id of this server, answered on the health route")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    speed_up_kinesis_shards()

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(args.port))
    for sig in (signal.SIGINT, signal.SIGTERM):  # as moto's own main
        signal.signal(sig, lambda *_: sys.exit(0))
    app = DomainDispatcherApplication(create_backend_app)
    identity = {"stack_id": args.stack_id, "state_dir": os.path.realpath(args.state_dir), "pid": os.getpid()}
    run_simple(args.host, args.port, with_health_route(app, identity), threaded=True,
               request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
