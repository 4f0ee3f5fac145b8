"""The CI-sized fuzz runs, through real guests on a real host and model: 10,000 random
calls to the twelve preview1 imports, and 10,000 to the WIT front-ends (wasi:nn and
wasinn:llm). The longer runs are benchmarks/fuzz.py."""

from __future__ import annotations

from wasinn_lab import Host
from wasinn_lab.fuzz import DOCUMENTED, TRAPS, fuzz, fuzz_wit
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


def test_ten_thousand_random_wit_calls_answer_as_documented_and_leak_nothing() -> None:
    # One thread: two on this machine's two busy cores cost ten times the time.
    with Host(default_model=False) as host:
        host.register("tiny", default_model_path(), config={"n-predict": 2, "ctx-size": 128, "threads": 1})
        report = fuzz_wit(host, calls=10_000, seed=20261205, model="tiny")
        assert report.calls == 10_000
        # Every answer the documented one, no host error logged, no trap but the planned ones.
        assert report.failures == []
        assert report.leaked_sessions == 0 and len(host.sessions) == 0
        assert report.resources_left == 0  # a guest that dropped everything left the host's tables empty
        # Each misuse the canonical ABI refuses trapped the guest alone, and what it held was freed.
        assert set(report.traps) == set(TRAPS) and report.freed_after_traps > 0
        # It reached every call, real work and the documented refusals, not only the error paths.
        calls = {call for call, _ in report.outcomes}
        assert set(DOCUMENTED) <= calls
        for call in ("nn_compute", "compute", "generate", "next_chunk", "p1_load_by_name", "p1_configure"):
            assert report.outcomes[call, "ok"] > 20, call
        for answer in [("nn_compute", "nn:invalid-argument"), ("set_parameter", "llm:invalid-parameter"),
                       ("load_by_name", "llm:not-found"), ("set_property", "llm:unsupported-operation"),
                       ("p1_configure", "p1:invalid-encoding"), ("next_chunk", "llm:too-large")]:
            assert report.outcomes[answer] > 0, answer
        # And the host serves the next guest as ever.
        assert host.run("stream_llm", "tiny", "Once upon a time").exit_code == 0
        assert host.run("echo_nn", "echo").exit_code == 0
