"""Which language datasets there are: settings, the pure rules, the CLI's language lists."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.config import DatasetSettings, Settings, load_settings
from pipeline.datasets.languages import dataset_hours, datasets_for, label, parse_languages
from pipeline.errors import ConfigError


def test_with_no_languages_configured_every_language_found_is_its_own_dataset() -> None:
    assert datasets_for((), ["vi", "en", "vi", "de"]) == [("de",), ("en",), ("vi",)]
    assert datasets_for((), []) == []


def test_configured_datasets_are_used_as_given_whatever_is_found() -> None:
    configured = DatasetSettings(languages=["vi", ["en", "de"]]).language_groups
    assert configured == (("vi",), ("de", "en"))
    assert datasets_for(configured, ["fr", "en"]) == [("vi",), ("de", "en")]


def test_a_datasets_hours_are_the_sum_of_its_languages() -> None:
    hours = {"en": 2.0, "de": 0.5, "fr": 1.0}
    assert dataset_hours([("de", "en"), ("vi",)], hours) == {("de", "en"): 2.5, ("vi",): 0.0}


@pytest.mark.parametrize(
    ("text", "languages"),
    [
        ("vi", ("vi",)),
        ("en,de", ("de", "en")),
        ("en+de", ("de", "en")),
        (" de, en,de ", ("de", "en")),
        ("en,", ("en",)),
    ],
)
def test_language_lists_on_the_command_line(text: str, languages: tuple[str, ...]) -> None:
    assert parse_languages(text) == languages
    assert label(languages) == "+".join(languages)


@pytest.mark.parametrize("text", ["", ",", "Vietnamese", "EN", "en;de", "e"])
def test_anything_else_is_a_clear_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="not a language list"):
        parse_languages(text)


@pytest.mark.parametrize(
    ("languages", "error"),
    [
        (["vi", "vi"], "names 'vi' twice"),
        ([["en", "de"], "de"], "names 'de' twice"),
        ([[]], "empty list"),
        (["EN"], "pattern"),
        (["en,de"], "pattern"),
    ],
)
def test_settings_refuse_a_language_in_two_datasets_or_no_language(
    languages: list[object], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        DatasetSettings(languages=languages)


def test_languages_come_from_the_environment_as_json_and_from_toml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AI2TEXT_DATASET__LANGUAGES", json.dumps(["vi", ["en", "de"]]))
    assert Settings().dataset.language_groups == (("vi",), ("de", "en"))
    monkeypatch.delenv("AI2TEXT_DATASET__LANGUAGES")
    assert Settings().dataset.language_groups == ()
    toml = tmp_path / "ai2text.toml"
    toml.write_text('[dataset]\nlanguages = ["vi", ["en", "de"]]\n')
    assert load_settings(toml).dataset.language_groups == (("vi",), ("de", "en"))
