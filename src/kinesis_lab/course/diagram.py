"""The architecture figure, with a "you are here" highlight per notebook.

``python -m kinesis_lab.course.diagram`` writes ``images/architecture.png`` and one ``images/you_are_here_<step>.png``
per notebook; the notebooks embed those files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from kinesis_lab.cloud.config import find_home

INK = "#1a1a1a"  # dark text on light fills
MARK = "#c00000"  # the "you are here" red
# (key, label, x, y, fill, edge): light fills, each service's colour on the edge; top row y=1, bottom row y<0
BOXES = [
    ("csv", "CSV file\n(dataset)", 0.0, 1.0, "#eeeeee", "#757575"),
    ("producer", "Producer\nput_records", 1.75, 1.0, "#eeeeee", "#757575"),
    ("kinesis", "Kinesis Data\nStreams", 3.8, 1.0, "#ffe3b8", "#e08a00"),
    ("firehose", "Data Firehose\n(delivery)", 5.55, 1.0, "#ffe3b8", "#e08a00"),
    ("s3", "S3 bucket\nbronze/ JSON", 7.3, 1.0, "#d9efcc", "#3f8624"),
    ("iam", "IAM roles\n(least privilege)", 5.55, -0.45, "#fbd5da", "#c7283e"),
    ("uc", "Unity Catalog\nexternal location", 9.95, -0.45, "#d3e0e5", "#1b3139"),
    ("bronze", "Bronze\nbronze_events", 9.45, 1.0, "#f1dccb", "#a0522d"),
    ("silver", "Silver\nsilver_events\n+ quarantine", 11.2, 1.0, "#e6e6e6", "#6e6e6e"),
    ("gold", "Gold\nmaterialized\nviews", 12.95, 1.0, "#faecbf", "#b8860b"),
]
ARROWS = [("csv", "producer"), ("producer", "kinesis"), ("kinesis", "firehose"), ("firehose", "s3"),
          ("s3", "bronze"), ("bronze", "silver"), ("silver", "gold"), ("iam", "firehose"), ("uc", "s3")]
# (label, boxes it groups, fill, edge): the panels behind the boxes
PANELS = [
    ("your machine", ["csv", "producer"], "#fafafa", "#9e9e9e"),
    ("AWS  (locally: moto on 127.0.0.1)", ["kinesis", "firehose", "s3", "iam"], "#fff6e8", "#e08a00"),
    ("Databricks  (locally: open-source Spark)", ["uc", "bronze", "silver", "gold"], "#eef3f5", "#1b3139"),
]

# notebook step -> boxes it works on
STEPS = {
    "00": ["csv"],
    "01": ["iam", "s3"],
    "02": ["kinesis"],
    "03": ["firehose"],
    "04": ["producer", "kinesis"],
    "05": ["s3"],
    "06": ["uc", "iam"],
    "07": ["bronze"],
    "08": ["silver"],
    "09": ["gold"],
}
TEARDOWN = [key for key, *_ in BOXES if key not in ("csv", "producer")]  # what 99_teardown deletes
W, H, PAD = 1.45, 0.8, 0.2
WIDE = 2.0  # the bottom row has room for longer labels


def _width(y: float) -> float:
    return W if y > 0 else WIDE


def draw(highlight: list[str] | None = None, title: str | None = None, struck: list[str] | None = None,
         banner: str | None = None):
    """``highlight``: boxes marked "you are here"; ``struck``: boxes crossed out, with one ``banner`` above."""
    highlight, struck = set(highlight or []), set(struck or [])
    focus = bool(highlight or struck)
    fig, ax = plt.subplots(figsize=(12, 4.1))
    centres = {key: (x, y) for key, _, x, y, *_ in BOXES}
    for label, keys, fill, edge in PANELS:
        x0 = min(centres[k][0] - _width(centres[k][1]) / 2 for k in keys) - PAD
        x1 = max(centres[k][0] + _width(centres[k][1]) / 2 for k in keys) + PAD
        ys = [centres[k][1] for k in keys]
        y0, y1 = min(ys) - H / 2 - 0.45, max(ys) + H / 2 + 0.6
        ax.add_patch(FancyBboxPatch((x0, y0), x1 - x0, y1 - y0, boxstyle="round,pad=0,rounding_size=0.12",
                                    facecolor=fill, edgecolor=edge, linewidth=1.4, zorder=0))
        ax.text(x0 + 0.12, y1 - 0.1, label, ha="left", va="top", fontsize=11.5, fontweight="bold", color=INK,
                zorder=1)
    for key, label, x, y, fill, edge in BOXES:
        on = key in highlight or not focus
        w = _width(y)
        ax.add_patch(FancyBboxPatch((x - w / 2, y - H / 2), w, H, boxstyle="round,pad=0.04",
                                    facecolor=fill if on else "#f4f4f4",
                                    edgecolor=MARK if key in highlight | struck else (edge if on else "#c4c4c4"),
                                    linewidth=3 if key in highlight else 1.4, linestyle="--" if key in struck else "-",
                                    zorder=2))
        ax.text(x, y, label, ha="center", va="center", fontsize=10, color=INK if on else "#6f6f6f", zorder=3)
        if key in struck:  # a red cross badge on the corner, the label stays readable
            ax.text(x + w / 2 - 0.02, y + H / 2 - 0.02, "\u2715", ha="center", va="center", fontsize=10,
                    fontweight="bold", color="white", zorder=4,
                    bbox={"boxstyle": "circle,pad=0.25", "facecolor": MARK, "edgecolor": "none"})
        if key in highlight:  # above a box of the top row, below one of the bottom row
            top = y > 0.5
            ax.text(x, y + (H / 2 + 0.08 if top else -H / 2 - 0.08), "you are here", ha="center",
                    va="bottom" if top else "top", fontsize=11, color=MARK, fontweight="bold", zorder=5)
    for a, b in ARROWS:
        (x1, y1), (x2, y2) = centres[a], centres[b]
        if y1 == y2:
            start, end, style = (x1 + W / 2 + 0.05, y1), (x2 - W / 2 - 0.05, y2), "arc3"
        elif x1 == x2:
            start, end, style = (x1, y1 + H / 2 + 0.05), (x2, y2 - H / 2 - 0.05), "arc3"
        else:  # across: leave sideways, enter from below
            start, end = (x1 - _width(y1) / 2 - 0.05, y1), (x2, y2 - H / 2 - 0.05)
            style = "angle,angleA=180,angleB=90,rad=0"
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=16, color="#404040",
                                     linewidth=1.4, connectionstyle=style, zorder=1))
    if banner:
        ax.text(6.5, 2.3, banner, ha="center", va="center", fontsize=14, fontweight="bold", color=MARK)
    ax.set_xlim(-0.98, 13.93)
    ax.set_ylim(-1.35, 2.55 if banner else 2.05)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=14, color=INK)
    fig.tight_layout()
    return fig


def write_all(images_dir: Path) -> list[Path]:
    images_dir.mkdir(parents=True, exist_ok=True)
    written = []
    figures = [("architecture", draw(title="Kinesis Data Streams → Firehose → S3 → Databricks (bronze / silver / gold)"))]
    figures += [(f"you_are_here_{step}", draw(boxes)) for step, boxes in STEPS.items()]
    figures.append(("you_are_here_99", draw(struck=TEARDOWN, banner="99 · teardown: everything the lab created goes")))
    for name, fig in figures:
        written.append(images_dir / f"{name}.png")
        fig.savefig(written[-1], dpi=100)
        plt.close(fig)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else find_home() / "images"
    for p in write_all(out):
        print(p)
