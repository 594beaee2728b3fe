"""Run moto's HTTP server (AWS APIs on 127.0.0.1) without a log line per request."""

from __future__ import annotations

import argparse
import logging

from moto.server import main as moto_main


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    moto_main(["-H", args.host, "-p", str(args.port)])


if __name__ == "__main__":
    main()
