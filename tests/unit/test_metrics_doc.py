"""docs/metrics.md and the registry cannot drift: same names, types and labels, both ways."""

from __future__ import annotations

import re
from pathlib import Path
from typing import get_args

from prometheus_client.metrics import MetricWrapperBase

from pipeline.errors import RejectCode
from pipeline.metrics import Metrics
from pipeline.sampler import JOB_STATES

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"
ROW = re.compile(r"^\| `(ai2text_\w+)` \| (\w+) \| ([^|]*) \|", re.MULTILINE)

Entry = tuple[str, str, tuple[str, ...]]


def registered() -> set[Entry]:
    """(exported name, type, labels) of every metric a ``Metrics()`` registers."""
    found = set()
    for metric in vars(Metrics()).values():
        if not isinstance(metric, MetricWrapperBase):
            continue
        (family,) = metric.describe()
        name = f"{family.name}_total" if family.type == "counter" else family.name
        found.add((name, family.type, tuple(metric._labelnames)))
    return found


def documented() -> set[Entry]:
    found = set()
    for name, kind, labels in ROW.findall(DOC.read_text(encoding="utf-8")):
        found.add((name, kind, tuple(re.findall(r"`(\w+)`", labels))))
    return found


def test_every_registered_metric_is_documented_with_its_type_and_labels() -> None:
    missing = registered() - documented()
    assert missing == set(), f"add to docs/metrics.md: {sorted(missing)}"


def test_every_documented_metric_is_registered_with_that_type_and_labels() -> None:
    stale = documented() - registered()
    assert stale == set(), f"not (or no longer) in pipeline/metrics.py: {sorted(stale)}"


def test_the_table_lists_each_metric_once() -> None:
    names = [name for name, _, _ in ROW.findall(DOC.read_text(encoding="utf-8"))]
    assert len(names) == len(set(names)) == len(registered())


def test_every_rejection_reason_code_and_job_state_is_documented() -> None:
    text = DOC.read_text(encoding="utf-8")
    reasons = set(re.findall(r"^\| `(\w+)` \| ", text.split("### Rejection reasons")[1], re.M))
    assert reasons == set(get_args(RejectCode))
    for state in JOB_STATES:
        assert f"`{state}`" in text, state
