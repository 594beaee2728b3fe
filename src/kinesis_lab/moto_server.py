"""Run moto's HTTP server (AWS APIs on 127.0.0.1) without a log line per request, and with one
performance fix for large Kinesis loads (same behaviour, no quadratic cost)."""

from __future__ import annotations

import argparse
import logging

from moto.server import main as moto_main


def speed_up_kinesis_shards() -> None:
    """moto 5.2 copies all of a shard's keys to find its last sequence number on every put: quadratic on
    big loads. Same answers in O(1) (records is an insertion-ordered dict keyed by sequence number)."""
    from moto.kinesis.models import Shard

    Shard.get_max_sequence_number = lambda self: next(reversed(self.records), 0)
    Shard.get_min_sequence_number = lambda self: next(iter(self.records), 0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    speed_up_kinesis_shards()
    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
