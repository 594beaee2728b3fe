from pathlib import Path

import pytest

from kinesis_lab.cloud.config import ConfigError, load_config


@pytest.fixture(autouse=True)
def no_lab_env(monkeypatch, tmp_path):
    for var in ("LAB_TARGET", "LAB_REGION", "AWS_REGION", "AWS_DEFAULT_REGION", "LAB_BUCKET", "LAB_STREAM_NAME",
                "LAB_BUFFER_INTERVAL_SECONDS", "LAB_STATE_DIR", "LAB_BUILD_DIR", "AWS_PROFILE", "AWS_DEFAULT_PROFILE",
                "LAB_AWS_ENDPOINT_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))  # this machine's profile stays out


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


def test_region_comes_from_the_aws_profile_before_the_default(monkeypatch, tmp_path):
    config = tmp_path / "aws-config"
    config.write_text("[default]\nregion = eu-west-3\n[profile work]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    assert load_config().region == "eu-west-3"
    monkeypatch.setenv("AWS_PROFILE", "work")
    assert load_config().region == "ap-south-1"
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-central-1")  # the environment beats the profile
    assert load_config().region == "eu-central-1"
    monkeypatch.setenv("LAB_REGION", "us-west-2")  # LAB_REGION beats both
    assert load_config().region == "us-west-2"
    assert load_config(region="sa-east-1").region == "sa-east-1"  # and the notebook parameter beats all
    monkeypatch.setenv("AWS_PROFILE", "missing")  # a profile that does not exist: no region from it, no crash
    monkeypatch.delenv("AWS_DEFAULT_REGION")
    monkeypatch.delenv("LAB_REGION")
    assert load_config().region == "us-east-1"


def test_aws_endpoint_setting(monkeypatch):
    assert load_config().aws_endpoint_url is None
    monkeypatch.setenv("LAB_AWS_ENDPOINT_URL", "http://localhost:4566")
    assert load_config(target="aws").aws_endpoint_url == "http://localhost:4566"


def test_child_environment_passes_the_configuration_and_puts_the_environment_back(monkeypatch, tmp_path):
    import os

    from kinesis_lab.cloud.config import child_environment

    monkeypatch.setenv("LAB_STREAM_NAME", "outer")
    monkeypatch.delenv("LAB_STATE_DIR", raising=False)
    cfg = load_config(home=tmp_path).with_overrides(state_dir=tmp_path / "private", stream_name="inner")
    with child_environment(cfg):
        assert os.environ["LAB_STATE_DIR"] == str(tmp_path / "private")
        child = load_config()  # what a notebook kernel started now resolves
        assert (child.state_dir, child.stream_name, child.home) == (tmp_path / "private", "inner", tmp_path)
    assert os.environ["LAB_STREAM_NAME"] == "outer" and "LAB_STATE_DIR" not in os.environ


def test_the_repository_is_found_one_way(monkeypatch, tmp_path):
    from kinesis_lab.cloud.config import find_home

    repo = Path(__file__).resolve().parents[1]
    monkeypatch.delenv("LAB_HOME", raising=False)
    assert find_home(repo / "notebooks") == repo  # from inside the repository
    assert find_home(tmp_path) == repo  # elsewhere: this package's own folder (editable install)
    monkeypatch.setenv("LAB_HOME", str(tmp_path))
    assert find_home(repo) == tmp_path  # LAB_HOME wins (an installed wheel used outside the repository)
