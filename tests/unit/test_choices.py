"""A job's options from request, source and tenant; languages the model can't do refused."""

from __future__ import annotations

import pytest

from pipeline import choices
from pipeline.choices import TRAINED_FROM, TranscriptionPolicy, UnsupportedLanguage
from pipeline.config import AsrSettings, S3SourceSettings, TenantSettings, WatchSettings


def policy(model: str = "base", **tenants: TenantSettings) -> TranscriptionPolicy:
    return TranscriptionPolicy(AsrSettings(model=model), dict(tenants))


def test_request_beats_source_beats_tenant_and_vocabularies_add_up() -> None:
    p = policy(acme=TenantSettings(language="de", channels="split", vocabulary=("Acme", "Zorp")))
    folder = WatchSettings(language="fr", vocabulary=("Zorp", "Quux"))

    assert p.options_for("acme") == {
        "language": "de",
        "channels": "split",
        "vocabulary": ["Acme", "Zorp"],
    }
    assert p.options_for("acme", folder) == {
        "language": "fr",
        "channels": "split",
        "vocabulary": ["Acme", "Zorp", "Quux"],
    }
    request = {"language": "es", "prompt": None, "word_timestamps": False, "vocabulary": ["Vex"]}
    assert p.options_for("acme", folder, request) == {
        "language": "es",
        "channels": "split",
        "vocabulary": ["Acme", "Zorp", "Quux", "Vex"],
        "word_timestamps": False,
    }
    # Another tenant gets none of acme's defaults.
    assert p.options_for("other", S3SourceSettings(bucket="b")) == {}


def test_an_english_only_model_refuses_other_languages_with_a_reason() -> None:
    p = policy("tiny.en", acme=TenantSettings(language="de"))
    assert p.options_for("default", request={"language": "en"}) == {"language": "en"}
    with pytest.raises(UnsupportedLanguage, match="transcribes English only; language 'de'") as err:
        p.options_for("acme")
    assert err.value.code == "language"


def test_the_multilingual_default_takes_vietnamese_but_not_an_unknown_code() -> None:
    p = policy()
    assert p.options_for("default", WatchSettings(language="vi")) == {"language": "vi"}
    with pytest.raises(UnsupportedLanguage, match="cannot transcribe language 'xx'; it knows 99"):
        p.check_language("xx")


def test_a_hub_model_whose_languages_are_unknown_is_checked_by_the_worker() -> None:
    assert policy("Systran/faster-whisper-small").options_for(
        "default", WatchSettings(language="xx")
    ) == {"language": "xx"}


def test_german_on_an_english_only_default_is_taken_when_the_request_names_base() -> None:
    p = policy("tiny.en")
    assert p.options_for("default", request={"language": "de", "model": "base"}) == {
        "language": "de",
        "model": "base",
    }
    with pytest.raises(UnsupportedLanguage, match="model tiny.en transcribes English only"):
        p.options_for("default", request={"language": "de", "model": None})


def test_a_request_naming_an_english_only_model_is_refused_naming_that_model() -> None:
    p = policy("base")
    with pytest.raises(UnsupportedLanguage) as err:
        p.options_for("default", request={"language": "de", "model": "tiny.en"})
    assert err.value.reason.startswith(
        "model tiny.en transcribes English only; language 'de' was requested"
    )
    # The configured model still takes German when the request names none.
    assert p.options_for("default", request={"language": "de"}) == {"language": "de"}


def test_a_registry_candidate_is_checked_against_the_model_it_was_trained_from() -> None:
    p = policy("base")
    english_child = {"language": "de", "model": "calls-v3-ab12cd", TRAINED_FROM: "tiny.en"}
    with pytest.raises(UnsupportedLanguage) as err:
        p.options_for("default", request=english_child)
    assert "model calls-v3-ab12cd (trained from tiny.en) transcribes English only" in str(
        err.value.reason
    )
    multilingual_child = {"language": "de", "model": "calls-v4-ef34ab", TRAINED_FROM: "base"}
    # Where it came from is read for the check, never kept in the job's options.
    assert p.options_for("default", request=multilingual_child) == {
        "language": "de",
        "model": "calls-v4-ef34ab",
    }
    # A registry name alone says nothing of its languages: the worker checks it.
    assert p.options_for("default", request={"language": "xx", "model": "calls-v5-0a0b0c"}) == {
        "language": "xx",
        "model": "calls-v5-0a0b0c",
    }


def test_languages_are_looked_up_once_per_model_name(monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []

    def fake_languages(name: str, cache_dir: object = None) -> tuple[str, ...] | None:
        looked_up.append(name)
        return ("en",) if name.endswith(".en") else ("en", "de")

    monkeypatch.setattr(choices, "model_languages", fake_languages)
    p = policy("tiny.en")
    assert not p.ready_for({"model": "base"}) and not p.ready_for(None)
    for _ in range(3):
        p.options_for("default", request={"language": "en"})
        p.options_for("default", request={"language": "de", "model": "base"})
    assert looked_up == ["tiny.en", "base"]
    assert p.ready_for({"model": "base"}) and p.ready_for(None)
    assert not p.ready_for({"model": "x", TRAINED_FROM: "small.en"})
