"""A job's options from request, source and tenant; languages the model can't do refused."""

from __future__ import annotations

import pytest

from pipeline.choices import TranscriptionPolicy, UnsupportedLanguage
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
