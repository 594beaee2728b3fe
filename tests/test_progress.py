"""The progress helper: throttled in-place updates, the final state on close, and what a notebook
executed by nbclient (as papermill does) stores."""

from __future__ import annotations

import nbformat
import pytest
from helpers import FakeClock
from nbclient import NotebookClient

from kinesis_lab.cloud.dataset import SAMPLE_PATH
from kinesis_lab.cloud.progress import Progress, in_jupyter_kernel, progress_bar
from kinesis_lab.cloud.records import RecordReader


def notebook_bar(total=540, **kwargs):
    clock, shown = FakeClock(), []
    bar = Progress(total, "event ids in S3", unit="rec", mode="notebook", sink=shown.append, clock=clock,
                   **kwargs)
    return bar, clock, shown


def test_notebook_mode_shows_at_once_then_at_most_every_half_second():
    bar, clock, shown = notebook_bar()
    assert shown == ["event ids in S3:   0%|          | 0/540 [00:00<?, ?rec/s]"]
    for step in range(1, 10):  # 9 updates 1/8 s apart: every 4th is 0.5 s after the last display
        clock.now += 0.125
        bar.set(step * 10)
    assert len(shown) == 3 and "| 40/540 [" in shown[1] and "| 80/540 [" in shown[2]
    clock.now += 0.125
    bar.update(5)
    assert len(shown) == 3 and bar.n == 95  # counted, not shown yet


def test_close_always_shows_the_final_state_once():
    bar, clock, shown = notebook_bar()
    clock.now += 5
    bar.set(540)  # 5 s after the first display: shown
    clock.now += 0.01
    with bar:
        pass  # close inside the throttle window: still shown, with the final time
    assert shown[-1] == "event ids in S3: 100%|██████████| 540/540 [00:05<00:00, 107.78rec/s]"
    count = len(shown)
    bar.set(10)  # after close: ignored
    bar.close()
    assert len(shown) == count and bar.n == 540 and " 0%|" not in shown[-1]


def test_close_shows_a_partial_state_as_it_is():
    bar, clock, shown = notebook_bar()
    clock.now += 0.2
    bar.set(270)  # throttled
    bar.close()
    assert shown[-1].startswith("event ids in S3:  50%|█████     | 270/540 [00:00<")


def test_unknown_or_zero_total_has_no_percentage():
    bar, _, shown = notebook_bar(total=None)
    bar.update(3)
    bar.close()
    assert shown[-1].startswith("event ids in S3: 3rec [00:00")
    bar, _, shown = notebook_bar(total=0)
    bar.close()
    assert "%" not in shown[-1]


def test_disabled_shows_nothing(capsys):
    shown = []
    with progress_bar(10, "nothing", disable=True, sink=shown.append) as bar:
        bar.update(10)
    assert bar.mode == "off" and shown == []
    assert capsys.readouterr() == ("", "")


def test_terminal_mode_outside_jupyter_is_tqdm_on_stderr(capsys):
    assert not in_jupyter_kernel()
    with progress_bar(4, "rows", unit="row") as bar:
        bar.set(2)
        bar.update(2)
    assert bar.mode == "terminal"
    err = capsys.readouterr().err
    assert "rows: 100%" in err and "4/4" in err


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError, match="mode must be"):
        Progress(1, mode="widget")


# --- in a real kernel, stored the way papermill stores it ---------------------------------------------------
FAKE_AWS = '''
import io


class FakeKinesis:
    def put_records(self, StreamName, Records):
        return {"FailedRecordCount": 0,
                "Records": [{"ShardId": "shardId-000000000000", "SequenceNumber": str(i)}
                            for i in range(len(Records))]}


class FakeS3:
    """Lands a third of the objects per listing."""

    def __init__(self, bodies):
        self.bodies, self.listings = bodies, 0

    def get_paginator(self, name):
        return self

    def paginate(self, Bucket, Prefix):
        self.listings += 1
        keys = sorted(self.bodies)[: len(self.bodies) * self.listings // 3]
        return [{"Contents": [{"Key": k, "Size": len(self.bodies[k])} for k in keys]}]

    def get_object(self, Bucket, Key):
        return {"Body": io.BytesIO(self.bodies[Key])}
'''


def run_notebook(cells: list[str], tmp_path) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    NotebookClient(nb, timeout=300, startup_timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    nbformat.validate(nb)
    return nb


def stored_texts(cell) -> list[str]:
    """Every text the cell's stored outputs hold (display data and streams)."""
    texts = []
    for out in cell.outputs:
        if out.output_type == "stream":
            texts.append(out.text)
        else:
            texts += [v if isinstance(v, str) else "".join(v) for v in out.get("data", {}).values()]
    return texts


@pytest.mark.notebooks  # runs a notebook in a kernel: make test-notebooks
def test_executed_notebook_stores_the_final_state(tmp_path):
    rows = RecordReader(SAMPLE_PATH).data_lines
    nb = run_notebook(
        [
            "import time\n"
            "from kinesis_lab.cloud.progress import progress_bar\n"
            "with progress_bar(540, 'steps', unit='rec') as bar:\n"
            "    for i in range(1, 541):\n"
            "        bar.set(i)\n"
            "        time.sleep(0.003)  # ~1.6 s: several throttled updates\n"
            "print('mode', bar.mode)",
            FAKE_AWS,
            "from kinesis_lab.cloud.producer import produce_file\n"
            f"result = produce_file({str(SAMPLE_PATH)!r}, stream_name='s', kinesis=FakeKinesis())\n"
            "print('sent', result.records_sent)",
            "import json\n"
            "from kinesis_lab.cloud.landing import wait_for_landing\n"
            "bodies = {f'bronze/{i}': b''.join(json.dumps({'event_id': str(j)}).encode() + b'\\n'\n"
            "                                 for j in range(i * 90, (i + 1) * 90)) for i in range(6)}\n"
            "landing = wait_for_landing(FakeS3(bodies), 'b', 'bronze/', {str(j) for j in range(540)},\n"
            "                           timeout=60, poll=0.3, progress=True)\n"
            "print('landed', landing.records)",
        ],
        tmp_path,
    )
    loop, _, produce, wait = nb.cells
    assert stored_texts(loop)[-1] == "mode notebook\n"
    assert stored_texts(produce)[-1] == f"sent {rows}\n"
    assert stored_texts(wait)[-1] == "landed 540\n"
    for cell, expected in ((loop, "steps: 100%|██████████| 540/540 ["),
                           (produce, f"child_labor_statistics_sample.csv -> s: 100%|██████████| {rows}/{rows} ["),
                           (wait, "event ids in S3: 100%|██████████| 540/540 [")):
        bars = [o for o in cell.outputs if o.output_type == "display_data"]
        assert len(bars) == 1, cell.outputs  # one output, updated in place: no widget, no trail of lines
        assert set(bars[0].data) == {"text/plain"}
        assert bars[0].data["text/plain"].startswith(expected), bars[0].data
        assert not any(" 0%|" in text for text in stored_texts(cell)), stored_texts(cell)
