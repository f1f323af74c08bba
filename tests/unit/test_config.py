"""load_settings: environment variables, TOML file, defaults and their checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.config import (
    CommandLauncherSettings,
    HttpLauncherSettings,
    Settings,
    load_settings,
)
from pipeline.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No AI2TEXT_* variables from the outside world; run in an empty directory."""
    for name in list(os.environ):
        if name.upper().startswith("AI2TEXT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def write_toml(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "ai2text.toml"
    path.write_text(body, encoding="utf-8")
    return path


def test_defaults_apply_without_env_or_file() -> None:
    settings = load_settings()

    assert settings.log_level == "info"
    assert settings.watch.quiet_period_s == 2.0
    assert settings.queue.lease_s == 60.0
    assert settings.database.url is None


def test_top_level_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_LOG_LEVEL", "debug")
    monkeypatch.setenv("AI2TEXT_SHUTDOWN_GRACE_S", "4.5")

    settings = load_settings()

    assert settings.log_level == "debug"
    assert settings.shutdown_grace_s == 4.5


def test_nested_environment_variables_use_double_underscore(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_DATABASE__URL", "postgresql://u:pw@db.example/ai2text")
    monkeypatch.setenv("AI2TEXT_ASR__COMPUTE_TYPE", "int8")
    monkeypatch.setenv("AI2TEXT_WATCH__QUIET_PERIOD_S", "7.5")
    monkeypatch.setenv("AI2TEXT_QUEUE__MAX_ATTEMPTS", "9")

    settings = load_settings()

    assert settings.database.url is not None
    assert settings.database.url.get_secret_value() == "postgresql://u:pw@db.example/ai2text"
    assert settings.asr.compute_type == "int8"
    assert settings.watch.quiet_period_s == 7.5
    assert settings.queue.max_attempts == 9


def test_invalid_environment_value_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_LOG_LEVEL", "loud")

    with pytest.raises(ConfigError, match="log_level"):
        load_settings()


def test_toml_file_is_read(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'log_level = "warning"\n'
        '\n[watch]\nquiet_period_s = 3.5\nafter_ingest = "keep"\n'
        "\n[queue]\nlease_s = 90\n",
    )

    settings = load_settings(path)

    assert settings.log_level == "warning"
    assert settings.watch.quiet_period_s == 3.5
    assert settings.watch.after_ingest == "keep"
    assert settings.queue.lease_s == 90.0


def test_environment_wins_over_the_toml_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, 'log_level = "warning"\n[watch]\nquiet_period_s = 3.5\n')
    monkeypatch.setenv("AI2TEXT_LOG_LEVEL", "error")
    monkeypatch.setenv("AI2TEXT_WATCH__QUIET_PERIOD_S", "9")

    settings = load_settings(path)

    assert settings.log_level == "error"
    assert settings.watch.quiet_period_s == 9.0


def test_file_values_not_set_in_environment_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_toml(tmp_path, '[watch]\nquiet_period_s = 3.5\ntenant = "acme"\n')
    monkeypatch.setenv("AI2TEXT_WATCH__QUIET_PERIOD_S", "9")

    settings = load_settings(path)

    assert settings.watch.quiet_period_s == 9.0
    assert settings.watch.tenant == "acme"


def test_missing_config_file_raises_config_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"

    with pytest.raises(ConfigError, match="not found") as info:
        load_settings(missing)
    assert str(missing) in str(info.value)


def test_a_directory_as_config_file_raises_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_settings(tmp_path)


def test_unknown_top_level_key_in_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'log_levle = "debug"\n')

    with pytest.raises(ConfigError, match="log_levle"):
        load_settings(path)


def test_unknown_section_in_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[wacth]\nquiet_period_s = 1\n")

    with pytest.raises(ConfigError, match="wacth"):
        load_settings(path)


def test_unknown_keyword_argument_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_unknown_key_inside_a_section_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[watch]\nquiet_period = 30\n")

    with pytest.raises(ConfigError, match="quiet_period"):
        load_settings(path)


def test_relative_paths_become_absolute_against_the_working_directory(
    tmp_path: Path,
) -> None:
    path = write_toml(
        tmp_path,
        'data_dir = "state"\n'
        '[watch]\ninbox = "in"\nprocessed_dir = "done"\nrejected_dir = "bad"\n'
        '[asr]\ntemp_dir = "scratch"\n',
    )

    settings = load_settings(path)

    assert settings.data_dir == tmp_path / "state"
    assert settings.watch.inbox == tmp_path / "in"
    assert settings.watch.processed_path == tmp_path / "done"
    assert settings.watch.rejected_path == tmp_path / "bad"
    assert settings.temp_dir == tmp_path / "scratch"
    for p in (settings.data_dir, settings.watch.inbox, settings.temp_dir):
        assert p.is_absolute()


def test_default_paths_are_absolute() -> None:
    settings = load_settings()

    assert settings.data_dir.is_absolute()
    assert settings.watch.inbox.is_absolute()
    assert settings.temp_dir == settings.data_dir / "tmp"


def test_tilde_in_paths_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AI2TEXT_WATCH__INBOX", "~/drop")

    assert load_settings().watch.inbox == home / "drop"


def test_processed_and_rejected_dirs_default_under_the_inbox(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AI2TEXT_WATCH__INBOX", str(tmp_path / "inbox"))

    settings = load_settings()

    assert settings.watch.processed_path == tmp_path / "inbox" / "processed"
    assert settings.watch.rejected_path == tmp_path / "inbox" / "rejected"


def test_heartbeat_interval_defaults_to_a_third_of_the_lease(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_QUEUE__LEASE_S", "45")

    assert load_settings().queue.heartbeat_interval_s == 15.0


def test_explicit_heartbeat_overrides_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_QUEUE__LEASE_S", "45")
    monkeypatch.setenv("AI2TEXT_QUEUE__HEARTBEAT_S", "4")

    assert load_settings().queue.heartbeat_interval_s == 4.0


def test_database_url_is_secret_and_hidden_from_repr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_DATABASE__URL", "postgresql://app:hunter2@db/ai2text")

    settings = load_settings()

    assert isinstance(settings.database.url, SecretStr)
    assert "hunter2" not in repr(settings)
    assert "hunter2" not in str(settings)
    assert "hunter2" not in repr(settings.database)
    assert settings.database.url.get_secret_value().endswith("hunter2@db/ai2text")


def test_storage_keys_are_secret_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_STORAGE__ACCESS_KEY", "AKIAEXAMPLE")
    monkeypatch.setenv("AI2TEXT_STORAGE__SECRET_KEY", "s3cr3t-value")

    text = repr(load_settings())

    assert "AKIAEXAMPLE" not in text
    assert "s3cr3t-value" not in text


# -- unknown names and malformed values: one readable line, never ignored --------------


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("AI2TEXT_FOO", "ai2text has no setting 'foo'"),
        ("AI2TEXT_WATCHER__INBOX", "ai2text has no setting 'watcher'"),
        ("AI2TEXT_WATCH__INBOXX", "the watch group has no setting 'inboxx'"),
        ("AI2TEXT_AUTH__SCOPES", "the auth group has no setting 'scopes'"),
        ("AI2TEXT_SHUTDOWN_GRACE_S__X", "shutdown_grace_s is not a group of settings"),
        ("AI2TEXT_DATABASE__URL__HOST", "database.url is not a group of settings"),
    ],
)
def test_an_environment_variable_that_names_no_setting_is_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, problem: str
) -> None:
    monkeypatch.setenv(name, "/x")

    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == f"unknown setting {name}: {problem}"


def test_unknown_names_are_found_whatever_their_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ai2text_watcher__inbox", "/x")

    with pytest.raises(ConfigError, match="AI2TEXT_WATCHER__INBOX"):
        load_settings()


def test_settings_built_directly_refuse_unknown_names_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_LOG_LEVLE", "debug")

    with pytest.raises(ConfigError, match="AI2TEXT_LOG_LEVLE"):
        Settings()


def test_a_table_setting_takes_any_key_below_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_TRAINING__COMMAND_ENV__HF_HOME", "/cache")

    launch = load_settings().training.launch
    assert isinstance(launch, CommandLauncherSettings)
    assert launch.command_env == {"hf_home": "/cache"}


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AI2TEXT_AUTH__ALGORITHMS", "RS256,ES256"),
        ("AI2TEXT_GATEWAY__CORS_ORIGINS", "https://a.example"),
        ("AI2TEXT_TRAINING__COMMAND", "python train.py"),
        ("AI2TEXT_VALIDATION__ALLOWED_EXTENSIONS", "wav,flac"),
        ("AI2TEXT_S3_SOURCES", "uploads"),
        ("AI2TEXT_AUTH__ALGORITHMS", ""),
    ],
)
def test_a_list_that_is_not_json_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert message.startswith(f"{name} is not valid JSON: it must be a JSON list")
    assert "\n" not in message


def test_a_table_that_is_not_json_is_refused_without_repeating_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_TRAINING__COMMAND_ENV", "TOKEN=hunter2")

    with pytest.raises(ConfigError, match="AI2TEXT_TRAINING__COMMAND_ENV .*JSON object") as refused:
        load_settings()
    assert "hunter2" not in str(refused.value)


def test_json_lists_in_the_environment_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_AUTH__ALGORITHMS", '["ES256"]')
    monkeypatch.setenv("AI2TEXT_S3_SOURCES", '[{"bucket": "uploads"}]')

    settings = load_settings()

    assert settings.auth.algorithms == ("ES256",)
    assert [s.bucket for s in settings.s3_sources] == ["uploads"]


def test_malformed_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[watch\nquiet_period_s = 1\n")

    with pytest.raises(ConfigError) as refused:
        load_settings(path)
    message = str(refused.value)
    assert message.startswith(f"{path} is not valid TOML: ")
    assert "line 1" in message and "\n" not in message


def test_a_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "ai2text.toml"
    path.write_bytes(b'log_level = "\xff"\n')

    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(path)


def test_invalid_values_are_described_on_one_line_without_their_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_STORAGE__SECURE", "hunter2")
    monkeypatch.setenv("AI2TEXT_QUEUE__MAX_ATTEMPTS", "0")

    with pytest.raises(ConfigError) as refused:
        load_settings()
    message = str(refused.value)
    assert "storage.secure: Input should be a valid boolean" in message
    assert "queue.max_attempts: Input should be greater than or equal to 1" in message
    assert "hunter2" not in message and "\n" not in message


def test_the_flat_launcher_variables_of_earlier_releases_still_configure_the_launcher(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AI2TEXT_TRAINING__LAUNCHER", "http")
    monkeypatch.setenv("AI2TEXT_TRAINING__HTTP_URL", "http://trainer.example/runs")
    monkeypatch.setenv("AI2TEXT_TRAINING__HTTP_TOKEN", "s3cret")
    monkeypatch.setenv("AI2TEXT_TRAINING__HTTP_ATTEMPTS", "2")
    monkeypatch.setenv("AI2TEXT_TRAINING__COMMAND", '["python", "train.py"]')

    training = load_settings().training

    assert training.launcher == "http"
    assert training.launch == HttpLauncherSettings(
        http_url="http://trainer.example/runs", http_token=SecretStr("s3cret"), http_attempts=2
    )


def test_the_launchers_own_group_is_read_from_toml_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = write_toml(
        tmp_path,
        '[training.launch]\nkind = "command"\ncommand = ["train", "{run_id}"]\n'
        'command_env = { HF_HOME = "/cache" }\n',
    )
    monkeypatch.setenv("AI2TEXT_TRAINING__LAUNCH__COMMAND_TIMEOUT_S", "60")

    launch = load_settings(path).training.launch

    assert launch == CommandLauncherSettings(
        command=("train", "{run_id}"), command_env={"HF_HOME": "/cache"}, command_timeout_s=60
    )


def test_the_flat_toml_form_still_reads_and_ignores_the_other_launchers_keys(
    tmp_path: Path,
) -> None:
    path = write_toml(
        tmp_path,
        '[training]\nlauncher = "http"\nhttp_url = "http://t.example/"\ncommand = ["x"]\n',
    )

    assert load_settings(path).training.launch == HttpLauncherSettings(http_url="http://t.example/")


@pytest.mark.parametrize(
    ("name", "value"),
    [("AI2TEXT_TRAINING__LAUNCHER", "slurm"), ("AI2TEXT_TRAINING__LAUNCH__KIND", "slurm")],
)
def test_an_unknown_launcher_is_refused_naming_the_known_ones(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ConfigError) as refused:
        load_settings()
    assert str(refused.value) == (
        "training: unknown training launcher 'slurm'; known launchers: command, http"
    )


def test_a_misspelt_launcher_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AI2TEXT_TRAINING__LAUNCH__HTTP_ULR", "http://t.example/")

    with pytest.raises(ConfigError, match="AI2TEXT_TRAINING__LAUNCH__HTTP_ULR.*training.launch"):
        load_settings()
