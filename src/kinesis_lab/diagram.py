"""The architecture figure, with a "you are here" highlight per notebook.

``python -m kinesis_lab.diagram`` writes ``images/architecture.png`` and one ``images/you_are_here_<step>.png``
per notebook; the notebooks embed those files.
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

# (key, label, x, y, colour); AWS parts orange, Databricks parts red/blue, local files grey
BOXES = [
    ("csv", "CSV file\n(dataset)", 0.0, 1.0, "#d9d9d9"),
    ("producer", "Producer\nput_records", 1.5, 1.0, "#d9d9d9"),
    ("kinesis", "Kinesis Data\nStreams", 3.0, 1.0, "#ff9900"),
    ("firehose", "Data Firehose\n(delivery)", 4.5, 1.0, "#ff9900"),
    ("s3", "S3 bucket\nbronze/ JSON", 6.0, 1.0, "#3f8624"),
    ("iam", "IAM roles\n(least privilege)", 4.5, -0.3, "#dd344c"),
    ("uc", "Unity Catalog\nexternal location", 6.0, -0.3, "#1b3139"),
    ("bronze", "Bronze\nbronze_events", 7.5, 1.0, "#a0522d"),
    ("silver", "Silver\nsilver_events\n+ quarantine", 9.0, 1.0, "#8c8c8c"),
    ("gold", "Gold\nmaterialized\nviews", 10.5, 1.0, "#d4a017"),
]
ARROWS = [("csv", "producer"), ("producer", "kinesis"), ("kinesis", "firehose"), ("firehose", "s3"),
          ("s3", "bronze"), ("bronze", "silver"), ("silver", "gold"), ("iam", "firehose"), ("uc", "s3")]

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
    "99": [key for key, *_ in BOXES if key not in ("csv", "producer")],
}
W, H = 1.2, 0.8


def draw(highlight: list[str] | None = None, title: str | None = None):
    highlight = set(highlight or [])
    fig, ax = plt.subplots(figsize=(13, 3.4))
    centres = {}
    for key, label, x, y, colour in BOXES:
        on = not highlight or key in highlight
        ax.add_patch(FancyBboxPatch((x - W / 2, y - H / 2), W, H, boxstyle="round,pad=0.05",
                                    facecolor=colour if on else "#f2f2f2", edgecolor="black" if on else "#bfbfbf",
                                    linewidth=2.5 if key in highlight else 1))
        ax.text(x, y, label, ha="center", va="center", fontsize=8.5,
                color=("white" if colour not in ("#d9d9d9", "#d4a017") else "black") if on else "#9a9a9a")
        centres[key] = (x, y)
    for a, b in ARROWS:
        (x1, y1), (x2, y2) = centres[a], centres[b]
        if y1 == y2:
            start, end = (x1 + W / 2 + 0.05, y1), (x2 - W / 2 - 0.05, y2)
        else:
            start, end = (x1, y1 + H / 2 + 0.05), (x2, y2 - H / 2 - 0.05)
        ax.add_patch(FancyArrowPatch(start, end, arrowstyle="-|>", mutation_scale=14, color="#404040"))
    for key in highlight:
        x, y = centres[key]
        ax.annotate("you are here", (x, y + H / 2 + 0.07), ha="center", va="bottom", fontsize=9,
                    color="#c00000", fontweight="bold")
    ax.text(2.25, 1.75, "AWS (moto on 127.0.0.1 locally)", ha="center", fontsize=9, color="#805000")
    ax.text(9.0, 1.75, "Databricks (open-source Spark locally)", ha="center", fontsize=9, color="#1b3139")
    ax.set_xlim(-0.8, 11.3)
    ax.set_ylim(-0.9, 2.0)
    ax.axis("off")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def write_all(images_dir: Path) -> list[Path]:
    images_dir.mkdir(parents=True, exist_ok=True)
    written = []
    fig = draw(title="Kinesis Data Streams -> Firehose -> S3 -> Databricks (bronze / silver / gold)")
    written.append(images_dir / "architecture.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    for step, boxes in STEPS.items():
        fig = draw(boxes)
        written.append(images_dir / f"you_are_here_{step}.png")
        fig.savefig(written[-1], dpi=80)
        plt.close(fig)
    return written


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "images"
    for p in write_all(out):
        print(p)
