"""Regenerate the synthetic sample: ``python data/generate_sample.py`` (seeded: same bytes every time).

Options: ``--rows N`` (default 540), ``--seed S`` (default 42), ``--out PATH`` (default: the shipped file),
``--clean`` (no dirty rows; the shipped sample has 7 rows breaking a quality rule and 1 malformed line),
``--aggregates`` (the real file's WORLD and REGION aggregate rows; with ``--clean``: a real-like file).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# runnable from a fresh clone too, before `pip install -e .`
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from kinesis_lab.cloud.dataset import SAMPLE_PATH, generate_synthetic_sample  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=540)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, default=SAMPLE_PATH)
    parser.add_argument("--clean", action="store_true", help="leave out the few dirty rows the shipped sample has")
    parser.add_argument("--aggregates", action="store_true",
                        help="add the real file's WORLD and REGION aggregate rows (with --clean: a real-like file)")
    args = parser.parse_args(argv)
    path = generate_synthetic_sample(args.out, rows=args.rows, seed=args.seed, dirty=not args.clean,
                                     aggregates=args.aggregates)
    print(f"wrote {args.rows} synthetic rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
