"""The promotion gate: pure logic over a run's metrics.json numbers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from pipeline.registry.candidates import gate_for
from pipeline.registry.gate import GateRules, decide
from pipeline.registry.records import ModelRecord

RULES = GateRules(promote_margin=0.05, canary_tolerance=0.10)


def metrics(
    test: tuple[float | None, float | None] = (0.30, 0.20),
    canary: tuple[float | None, float | None] = (0.10, 0.10),
) -> dict[str, Any]:
    return {
        "trainer": "whisper",
        "wer": {
            "current": {"dev": 0.3, "test": test[0], "canary": canary[0]},
            "candidate": {"dev": 0.2, "test": test[1], "canary": canary[1]},
        },
    }


def test_a_candidate_beating_the_margin_without_canary_regression_is_promoted() -> None:
    decision = decide(metrics(test=(0.30, 0.20), canary=(0.10, 0.105)), RULES)
    assert decision.promote
    assert "test WER 0.2000 against 0.3000" in decision.reason


def test_the_margin_is_relative_to_the_current_test_wer() -> None:
    # 5 % below 0.20 is 0.19: 0.19 passes, 0.191 does not.
    assert decide(metrics(test=(0.20, 0.19)), RULES).promote
    refused = decide(metrics(test=(0.20, 0.191)), RULES)
    assert not refused.promote
    assert "needs at most 0.1900" in refused.reason


def test_a_candidate_worse_or_equal_to_the_current_model_is_not_promoted() -> None:
    assert not decide(metrics(test=(0.20, 0.25)), RULES).promote
    assert not decide(metrics(test=(0.20, 0.20)), GateRules(promote_margin=0.0)).promote


def test_a_perfect_current_model_cannot_be_beaten() -> None:
    assert not decide(metrics(test=(0.0, 0.0)), GateRules(promote_margin=0.0)).promote


def test_a_canary_regression_beyond_the_tolerance_blocks_promotion() -> None:
    refused = decide(metrics(test=(0.30, 0.10), canary=(0.10, 0.111)), RULES)
    assert not refused.promote
    assert "canary WER 0.1110 against 0.1000" in refused.reason
    assert "10%" in refused.reason
    # Within the tolerance (10 % relative): promoted.
    assert decide(metrics(test=(0.30, 0.10), canary=(0.10, 0.11)), RULES).promote


@pytest.mark.parametrize(
    ("test", "canary", "missing"),
    [
        ((None, 0.2), (0.1, 0.1), "no test WER for the current model"),
        ((0.3, None), (0.1, 0.1), "no test WER for the candidate model"),
        ((0.3, 0.2), (None, None), "no canary WER for the current and candidate model"),
    ],
)
def test_missing_numbers_mean_no_promotion_and_say_which(
    test: tuple[float | None, float | None],
    canary: tuple[float | None, float | None],
    missing: str,
) -> None:
    decision = decide(metrics(test=test, canary=canary), RULES)
    assert not decision.promote
    assert missing in decision.reason


def test_metrics_without_a_wer_section_are_not_promoted() -> None:
    assert not decide({"trainer": "whisper"}, RULES).promote
    assert not decide({"wer": {"current": {"test": "0.3"}}}, RULES).promote


def record(**fields: Any) -> ModelRecord:
    base: dict[str, Any] = {
        "id": uuid.uuid4(),
        "name": "m",
        "base_model": "base",
        "base_model_id": None,
        "dataset_version_id": None,
        "tenant": None,
        "run_id": None,
        "metrics": metrics(),
        "size_bytes": 1,
        "prefix": "models/x",
        "files": [],
        "state": "candidate",
        "decision": None,
        "created_by": "test",
        "created_at": datetime.now(UTC),
        "promoted_at": None,
        "promoted_by": None,
        "retired_at": None,
        "retired_by": None,
    }
    return ModelRecord(**(base | fields))


def test_a_candidate_trained_from_another_model_than_the_running_one_is_not_promoted() -> None:
    running = record(state="promoted", name="newer")
    decision = gate_for(record(base_model_id=None), running, RULES)
    assert not decision.promote
    assert "the workers run newer" in decision.reason
    # Trained from the running one: the numbers decide.
    assert gate_for(record(base_model_id=running.id), running, RULES).promote
    assert gate_for(record(base_model_id=None), None, RULES).promote
