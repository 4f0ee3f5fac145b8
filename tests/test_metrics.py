"""Per-generation and per-token metrics, recorded on real generations."""

from __future__ import annotations

import pytest

from wasinn_lab import Host


@pytest.mark.parametrize("guest", ["stream", "complete"])
def test_each_generation_is_measured(host: Host, guest: str) -> None:
    session_id = f"metrics-{guest}"
    host.run(guest, "default", "Once upon a time", session=session_id, params={"n-predict": 8, "temp": 0})
    host.run(guest, "default", "Once upon a time, there", session=session_id)
    session = host.session(session_id)
    try:
        frame = session.metrics()
        assert len(frame) == 2 and list(frame["output_tokens"]) == [8, 8]
        first, second = session.generations
        assert first.evaluated_tokens == first.prompt_tokens and second.evaluated_tokens < second.prompt_tokens
        for g in session.generations:
            assert 0 < g.prompt_seconds <= g.time_to_first_token < g.wall_seconds
            assert g.decode_tokens_per_second > 0
            assert 0 < g.backend_seconds <= g.host_seconds <= g.wall_seconds
            # The three parts account for the whole generation.
            assert g.backend_seconds + g.boundary_seconds + g.guest_seconds == pytest.approx(g.wall_seconds, rel=1e-6)
            assert len(g.token_times) == 8 and g.token_times == sorted(g.token_times)
        tokens = session.token_metrics()
        assert len(tokens) == 16 and (tokens["latency_s"] > 0).all()
        assert "".join(tokens[tokens.generation == 1]["text"]) == session.text
    finally:
        host.sessions.close(session_id)


def test_plots_draw_from_the_frames(host: Host) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from wasinn_lab import plots

    host.run("stream", "default", "Hello", session="plotted", params={"n-predict": 5})
    session = host.session("plotted")
    try:
        figure = plots.session_overview(session.metrics(), session.token_metrics())
        assert len(figure.axes) == 3
        line = figure.axes[0].lines[0]
        assert len(line.get_xdata()) == 5
    finally:
        host.sessions.close("plotted")
