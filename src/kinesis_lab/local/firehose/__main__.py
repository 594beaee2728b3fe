"""The local Firehose delivery service: Kinesis-sourced delivery streams -> S3 objects.

Talks to whatever boto3 is configured for (the local stack sets AWS_ENDPOINT_URL and the region).
Logs one line per delivered object to stdout. SIGTERM: deliver what is buffered, then exit.
One worker per state folder (a lock in it): a second one exits at once (code 3), so two workers
never deliver the same records from the same checkpoints.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

from botocore.exceptions import BotoCoreError

from kinesis_lab.local import procs
from kinesis_lab.local.firehose.service import Service

LOCK_NAME = "worker.lock"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m kinesis_lab.local.firehose", description=__doc__)
    parser.add_argument("--state-dir", required=True, help="folder for checkpoints.json")
    parser.add_argument("--poll-interval", type=float, default=0.2, help="seconds between polls")
    parser.add_argument(
        "--once", action="store_true", help="one poll, deliver all it read (ignoring buffering), exit"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(levelname)s %(message)s", force=True
    )
    logging.getLogger("botocore").setLevel(logging.WARNING)

    state_dir = Path(args.state_dir)
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(
                procs.file_lock(state_dir / LOCK_NAME, 0, f"another local Firehose worker delivers from {state_dir}")
            )
        except TimeoutError as exc:
            logging.getLogger("local_firehose").error("not starting: %s", exc)
            return 3
        return _run(args)


def _run(args) -> int:
    try:
        service = Service(args.state_dir)
    except (ValueError, BotoCoreError) as exc:  # e.g. a corrupt checkpoint file, no region
        logging.getLogger("local_firehose").error("cannot start: %s", exc)
        return 2
    if args.once:
        service.poll()
        return 0 if service.shutdown(budget=10.0) else 1

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    service.run(stop, args.poll_interval)
    logging.getLogger("local_firehose").info("stopping: delivering what is buffered")
    service.shutdown(budget=3.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
