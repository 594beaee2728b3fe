from pathlib import Path

import pytest

from kinesis_lab.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def no_lab_env(monkeypatch):
    for var in ("LAB_TARGET", "LAB_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "LAB_BUCKET", "LAB_STREAM_NAME",
                "LAB_BUFFER_INTERVAL_SECONDS", "LAB_STATE_DIR", "LAB_BUILD_DIR"):
        monkeypatch.delenv(var, raising=False)


def test_defaults_follow_the_original_course():
    cfg = load_config()
    assert (cfg.target, cfg.region) == ("local", "us-east-1")
    assert cfg.stream_name == "jm-demo-kinesis-lab"
    assert cfg.delivery_stream_name == "salud-firehose-tos3"
    assert cfg.firehose_role_name == "FirehoseToS3Role"
    assert cfg.buffer_interval_seconds == 5
    assert load_config(target="aws").buffer_interval_seconds == 60


def test_bucket_name_is_unique_per_account_and_region_unless_given():
    cfg = load_config(region="eu-west-1")
    assert cfg.bucket_name("111122223333") == "jm-demo-s3-lab-111122223333-eu-west-1"
    assert load_config(bucket="mine").bucket_name("111122223333") == "mine"


def test_environment_beats_default_and_parameter_beats_environment(monkeypatch):
    monkeypatch.setenv("LAB_STREAM_NAME", "from-env")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")
    monkeypatch.setenv("LAB_BUFFER_INTERVAL_SECONDS", "30")
    assert load_config().stream_name == "from-env"
    assert load_config().region == "eu-central-1"
    assert load_config().buffer_interval_seconds == 30
    assert load_config(stream_name="from-param", region=None).stream_name == "from-param"


def test_unknown_target_says_how_to_fix(monkeypatch):
    monkeypatch.setenv("LAB_TARGET", "azure")
    with pytest.raises(ConfigError) as err:
        load_config()
    assert str(err.value).startswith("unknown target 'azure': use 'local'")


def test_bad_numbers_and_unknown_settings_are_refused(monkeypatch):
    monkeypatch.setenv("LAB_BUFFER_INTERVAL_SECONDS", "soon")
    with pytest.raises(ConfigError, match="buffer_interval_seconds must be a whole number, got 'soon'"):
        load_config()
    monkeypatch.delenv("LAB_BUFFER_INTERVAL_SECONDS")
    with pytest.raises(ConfigError, match="unknown setting"):
        load_config(streem_name="typo")


def test_state_and_build_dirs_follow_home_or_env(monkeypatch, tmp_path):
    cfg = load_config(home=tmp_path)
    assert cfg.state_dir == tmp_path / ".lab" and cfg.build_dir == tmp_path / "build"
    monkeypatch.setenv("LAB_STATE_DIR", str(tmp_path / "s"))
    assert load_config().state_dir == Path(tmp_path / "s")
