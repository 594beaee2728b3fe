"""The run summary follows one series: 00 starts it, 04 records what it sent, 05-09 check that, 99 closes it."""

import pytest

from kinesis_lab.cloud.dataset import SAMPLE_PATH, DatasetError
from kinesis_lab.cloud.summary import (
    DatasetMismatch,
    dataset_of_run,
    end_run,
    read_summary,
    start_run,
    summary_path,
    update_summary,
)
from kinesis_lab.course.demo import parameters_for

REPO_NOTEBOOKS = SAMPLE_PATH.parents[1] / "notebooks"


@pytest.fixture
def other_csv(tmp_path):
    path = tmp_path / "other.csv"
    path.write_text(SAMPLE_PATH.read_text(encoding="utf-8").splitlines()[0] + "\n"
                    "Nepal,NPL,Asia and the Pacific,2010,20.5,1.5,Total,5-17 years\n", encoding="utf-8")
    return path


def test_a_new_series_starts_a_new_summary_and_99_closes_it(tmp_path):
    update_summary(tmp_path, records_sent=540, s3_records=540)
    start_run(tmp_path, dataset_path=str(SAMPLE_PATH))
    now = read_summary(tmp_path)
    assert "records_sent" not in now and now["dataset_path"] == str(SAMPLE_PATH)
    assert read_summary(tmp_path, previous=True)["records_sent"] == 540
    update_summary(tmp_path, records_sent=3)
    assert end_run(tmp_path) == tmp_path / "previous-run-summary.json"
    assert not summary_path(tmp_path).exists()
    assert read_summary(tmp_path) == {} and read_summary(tmp_path, previous=True)["records_sent"] == 3
    assert end_run(tmp_path) is None  # closing twice is fine


def test_defaults_00_to_03_then_04_with_another_csv_then_05_to_09_check_what_04_sent(tmp_path, other_csv):
    start_run(tmp_path, dataset_path=str(dataset_of_run(tmp_path, "sample", producing=True)))  # 00, default
    sent = dataset_of_run(tmp_path, str(other_csv), producing=True)  # 04 with dataset=<another CSV>
    update_summary(tmp_path, dataset_path=str(sent), records_sent=1)
    assert sent == other_csv
    assert dataset_of_run(tmp_path) == other_csv  # 05-09 with their default (None)
    assert dataset_of_run(tmp_path, str(other_csv)) == other_csv  # the same file named again is fine


def test_04_without_a_dataset_sends_what_00_chose(tmp_path, other_csv):
    start_run(tmp_path, dataset_path=str(other_csv))
    assert dataset_of_run(tmp_path, None, producing=True) == other_csv


def test_no_summary_means_the_shipped_sample(tmp_path):
    assert dataset_of_run(tmp_path) == SAMPLE_PATH
    assert dataset_of_run(tmp_path, producing=True) == SAMPLE_PATH


def test_checking_another_csv_than_04_sent_is_a_mismatch_with_the_fix(tmp_path, other_csv):
    update_summary(tmp_path, dataset_path=str(other_csv), records_sent=1)
    with pytest.raises(DatasetMismatch) as err:
        dataset_of_run(tmp_path, "sample")
    assert str(err.value) == (
        "notebook 04 sent other.csv (1 records), but this notebook was asked to check "
        "child_labor_statistics_sample.csv: leave dataset=None to check what was sent, or run 04 again with "
        "dataset='sample'")


def test_a_copy_of_the_sent_file_is_the_same_dataset(tmp_path, other_csv):
    copy = tmp_path / "copy.csv"
    copy.write_bytes(other_csv.read_bytes())
    update_summary(tmp_path, dataset_path=str(other_csv), records_sent=1)
    assert dataset_of_run(tmp_path, str(copy)) == copy


def test_a_recorded_dataset_that_is_gone_says_so(tmp_path, other_csv):
    update_summary(tmp_path, dataset_path=str(other_csv), records_sent=1)
    other_csv.unlink()
    with pytest.raises(DatasetError, match="this run's dataset .*other.csv is gone"):
        dataset_of_run(tmp_path)


def test_the_demo_gives_the_dataset_to_00_and_04_only():
    wanted = {"dataset": "/data/x.csv", "simulated_failure_rate": 0.3}
    given = {nb.name[:2]: parameters_for(nb, wanted) for nb in sorted(REPO_NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))}
    assert given["00"] == {"dataset": "/data/x.csv"}
    assert given["04"] == wanted
    assert all("dataset" not in params for key, params in given.items() if key not in ("00", "04"))
