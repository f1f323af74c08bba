"""Which language datasets there are, and how many hours each holds.

A dataset is one language, or an explicit list of languages sharing one dataset
(``dataset.languages``); with none configured every language found makes its own.
A dataset's languages are a sorted tuple (``("de", "en")``), recorded as such on
every version (``dataset_versions.languages``) and compared as such.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from pipeline.errors import ConfigError

# What a segment is filed under when neither it nor its transcript names a language.
UNDETERMINED = "und"

Languages = tuple[str, ...]

_CODE = re.compile(r"^[a-z]{2,3}$")


def datasets_for(configured: Iterable[Languages], found: Iterable[str]) -> list[Languages]:
    """The datasets to consider: those configured, else one per language ``found``."""
    chosen = list(configured)
    if chosen:
        return chosen
    return [(language,) for language in sorted(set(found))]


def dataset_hours(
    datasets: Iterable[Languages], hours_by_language: Mapping[str, float]
) -> dict[Languages, float]:
    """Each dataset's eligible hours: the sum of its languages' (0 for none found)."""
    return {
        languages: sum(hours_by_language.get(code, 0.0) for code in languages)
        for languages in datasets
    }


def label(languages: Iterable[str]) -> str:
    """``de+en``: how a dataset's languages are written for people."""
    return "+".join(languages)


def parse_languages(text: str) -> Languages:
    """``"vi"``, ``"en,de"`` or ``"en+de"`` as a dataset's sorted languages."""
    codes = [c.strip() for c in re.split(r"[,+\s]+", text.strip()) if c.strip()]
    bad = [c for c in codes if not _CODE.fullmatch(c)]
    if not codes or bad:
        raise ConfigError(f"not a language list: {text!r}; give ISO 639 codes such as vi or en,de")
    return tuple(sorted(set(codes)))
