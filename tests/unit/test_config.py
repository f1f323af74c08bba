"""load_settings: environment variables, TOML file, defaults and their checks."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from pipeline.config import Settings, load_settings
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

    with pytest.raises(ValidationError, match="log_level"):
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

    with pytest.raises(ValidationError, match="log_levle"):
        load_settings(path)


def test_unknown_section_in_file_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[wacth]\nquiet_period_s = 1\n")

    with pytest.raises(ValidationError, match="wacth"):
        load_settings(path)


def test_unknown_keyword_argument_is_refused() -> None:
    with pytest.raises(ValidationError, match="extra"):
        Settings(no_such_setting=1)  # type: ignore[call-arg]


def test_unknown_key_inside_a_section_is_refused(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "[watch]\nquiet_period = 30\n")

    with pytest.raises(ValidationError, match="quiet_period"):
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
