"""``ai2text --help`` (and each command's help) answers without loading the heavy parts.

The model runtime, the web framework and the settings machinery take about a second
to import; a user asking for help must not wait for them.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("faster_whisper", "ctranslate2", "torch", "fastapi", "uvicorn", "pydantic_settings")

_PROBE = """
import contextlib, io, json, sys
from ai2text.cli import main
sys.argv = ["ai2text", *json.loads(sys.argv[1])]
with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
    main()
print(json.dumps({"help": out.getvalue(), "modules": sorted(sys.modules)}))
"""


def _run_help(*args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(list(args))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("args", [("--help",), ("up", "--help"), ("show", "--help")])
def test_help_imports_no_model_runtime_web_framework_or_settings(args: tuple[str, ...]) -> None:
    result = _run_help(*args)
    assert "usage:" in str(result["help"])
    loaded = set(result["modules"])  # type: ignore[arg-type]
    assert not loaded & set(HEAVY), f"`ai2text {' '.join(args)}` imported {loaded & set(HEAVY)}"
