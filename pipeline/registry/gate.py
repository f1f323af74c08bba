"""The promotion gate: pure logic over a run's ``metrics.json`` numbers.

A candidate is promoted only when both hold:

- **test WER beats the current model's by the margin.** ``promote_margin`` is
  *relative*: with margin 0.05 a candidate must reach at most 95 % of the current
  model's test WER (0.20 → at most 0.19), and be strictly lower;
- **the canary does not regress** by more than ``canary_tolerance``, also relative:
  with 0.10 the candidate's canary WER may be at most 110 % of the current one's.

"Current" is the model the run started from, measured by the trainer on the same
sets. A number that is missing (a split without utterances is ``null``) means no
promotion: the reason says which one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class GateRules:
    promote_margin: float = 0.02
    canary_tolerance: float = 0.10


@dataclass(frozen=True, slots=True)
class Decision:
    promote: bool
    reason: str


def _wer(metrics: dict[str, Any], model: str, split: str) -> float | None:
    value = ((metrics.get("wer") or {}).get(model) or {}).get(split)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def decide(metrics: dict[str, Any], rules: GateRules) -> Decision:
    """Whether a candidate with ``metrics`` (metrics.json's shape) is to be promoted."""
    current_test = _wer(metrics, "current", "test")
    candidate_test = _wer(metrics, "candidate", "test")
    current_canary = _wer(metrics, "current", "canary")
    candidate_canary = _wer(metrics, "candidate", "canary")
    if current_test is None or candidate_test is None:
        return Decision(False, _missing(current_test, candidate_test, "test"))
    if current_canary is None or candidate_canary is None:
        return Decision(False, _missing(current_canary, candidate_canary, "canary"))
    needed = current_test * (1.0 - rules.promote_margin)
    tests = f"test WER {candidate_test:.4f} against {current_test:.4f}"
    if not (candidate_test < current_test and candidate_test <= needed):
        return Decision(
            False,
            f"not promoted: {tests}; needs at most {needed:.4f}"
            f" ({rules.promote_margin:.0%} below the current model)",
        )
    allowed = current_canary * (1.0 + rules.canary_tolerance)
    canaries = f"canary WER {candidate_canary:.4f} against {current_canary:.4f}"
    if candidate_canary > allowed:
        return Decision(
            False,
            f"not promoted: {canaries} regresses more than"
            f" {rules.canary_tolerance:.0%} (at most {allowed:.4f}); {tests}",
        )
    return Decision(True, f"promoted: {tests}, {canaries}")


def _missing(current: float | None, candidate: float | None, split: str) -> str:
    which = [name for name, v in (("current", current), ("candidate", candidate)) if v is None]
    return f"not promoted: no {split} WER for the {' and '.join(which)} model in the run's metrics"
