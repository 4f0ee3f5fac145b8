"""The CI-sized fuzz run: 10,000 random calls to the twelve imports, through a real guest
on a real host and model. The longer run is benchmarks/fuzz.py."""

from __future__ import annotations

from wasinn_lab import Host
from wasinn_lab.fuzz import fuzz
from wasinn_lab.models import default_model_path


def test_ten_thousand_random_calls_crash_nothing_and_leak_nothing() -> None:
    host = Host(default_model=False)
    host.register("tiny", default_model_path(), config={"n-predict": 2, "ctx-size": 128})
    report = fuzz(host, calls=10_000, seed=20261123)
    assert report.calls == 10_000
    assert report.unexpected == []  # every call answered with an errno, none from a host bug
    assert report.leaked_sessions == 0 and len(host.sessions) == 0
    # The run reached real work, not only the error paths.
    assert report.errnos[0] > 500
    assert {1, 2, 8} <= set(report.errnos)
    assert report.by_call["compute"] + report.by_call["compute_single"] > 300
