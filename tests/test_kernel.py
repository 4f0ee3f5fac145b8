"""The extension in a real Jupyter kernel (jupyter_client): streaming display updates,
an interrupt sent to the kernel mid-generation, and a shaded view (--show probs) growing
as tokens come."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import updates_expected, wait_idle
from jupyter_client.blocking.client import BlockingKernelClient
from jupyter_client.manager import KernelManager


@pytest.fixture(scope="module")
def kernel() -> Iterator[tuple[KernelManager, BlockingKernelClient]]:
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    client = manager.client()
    client.start_channels()
    client.wait_for_ready(timeout=60)
    reply = client.execute_interactive("%load_ext wasinn_lab", timeout=60)
    assert reply["content"]["status"] == "ok"
    yield manager, client
    client.stop_channels()
    manager.shutdown_kernel(now=True)


def execute(client: BlockingKernelClient, code: str, timeout: float = 300) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    messages: list[dict[str, Any]] = []
    reply = client.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    return reply, messages


def test_tokens_stream_into_one_display_that_ends_with_the_whole_text(kernel) -> None:  # type: ignore[no-untyped-def]
    _, client = kernel
    # A named session outlives the guest, so its token timeline can be read afterwards.
    reply, messages = execute(client, "%%wasi_nn stream --session timeline -p n-predict=48 -p temp=0\nOnce upon a time")
    assert reply["content"]["status"] == "ok"
    displays = [m for m in messages if m["msg_type"] == "display_data"]
    updates = [m for m in messages if m["msg_type"] == "update_display_data"]
    assert len(displays) == 1
    display_id = displays[0]["content"]["transient"]["display_id"]
    assert all(m["content"]["transient"]["display_id"] == display_id for m in updates)
    timeline = execute(client, "from wasinn_lab.notebook import current_lab\n"
                               "print(current_lab().session('timeline').generations[-1].token_times)")[1]
    token_times = eval(next(m for m in timeline if m["msg_type"] == "stream")["content"]["text"])
    expected = updates_expected(token_times, at_most=3)
    assert len(updates) >= expected  # text arrived in several steps, not only at the end
    final = updates[-1]["content"]["data"]["text/plain"]
    assert "done]" in final
    texts = [m["content"]["data"]["text/plain"] for m in updates]
    assert len(set(texts)) >= expected and len(texts[0]) < len(final)  # it grew as tokens came
    result = execute(client, "print(repr(_wasi_nn.text))")[1]
    generated = eval(next(m for m in result if m["msg_type"] == "stream")["content"]["text"])
    assert generated and generated in final


def test_an_interrupt_fails_the_cell_and_the_session_carries_on(kernel) -> None:  # type: ignore[no-untyped-def]
    manager, client = kernel
    msg_id = client.execute("%%wasi_nn stream --session intr -p n-predict=3000 -p temp=0\nOnce upon a time")
    updates = 0
    deadline = time.monotonic() + 120
    while updates < 3 and time.monotonic() < deadline:  # wait until tokens are flowing
        message = client.get_iopub_msg(timeout=60)
        if message["parent_header"].get("msg_id") == msg_id and message["msg_type"] == "update_display_data":
            updates += 1
    assert updates >= 3
    interrupted_at = time.monotonic()
    manager.interrupt_kernel()
    reply = client.get_shell_msg(timeout=120)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - interrupted_at < 10
    wait_idle(client, msg_id)
    reply, messages = execute(
        client,
        "s = __import__('wasinn_lab.notebook', fromlist=['current_lab']).current_lab().session('intr')\n"
        "print(s.state, s.generations[-1].output_tokens)",
    )
    state, tokens = next(m for m in messages if m["msg_type"] == "stream")["content"]["text"].split()
    assert state == "idle" and 0 < int(tokens) < 3000
    reply, _ = execute(client, "%%wasi_nn stream -q --session intr -p n-predict=4\nThe end")
    assert reply["content"]["status"] == "ok"
    reply, messages = execute(client, "print(s.generations[-1].output_tokens)")
    assert next(m for m in messages if m["msg_type"] == "stream")["content"]["text"].strip() == "4"


def test_the_shaded_view_grows_while_tokens_come_and_ends_with_each_token_and_the_plot(kernel) -> None:  # type: ignore[no-untyped-def]
    from wasinn_lab.notebook.probabilities import ProbabilityCell

    _, client = kernel
    reply, messages = execute(client, "%%wasi_nn stream --session shading -p n-predict=32 -p temp=0 --show probs\n"
                                      "Once upon a time")
    assert reply["content"]["status"] == "ok"
    pages = [m["content"]["data"]["text/html"] for m in messages if m["msg_type"] == "update_display_data"
             and "wasinn-probs-" in m["content"]["data"].get("text/html", "")]
    shaded = [len(re.findall(r'class="wasinn-probs-\d+-t"', page)) for page in pages]
    assert shaded and shaded[-1] == 32 and shaded == sorted(shaded), shaded  # one span a token, only ever more
    timeline = execute(client, "from wasinn_lab.notebook import current_lab\n"
                               "print(current_lab().session('shading').generations[-1].token_times)")[1]
    token_times = eval(next(m for m in timeline if m["msg_type"] == "stream")["content"]["text"])
    span = token_times[-1] - token_times[0]
    expected = max(1, min(2, int(span * ProbabilityCell.UPDATES_PER_SECOND) - 1))
    assert len({count for count in shaded if count < 32}) >= expected, shaded  # shaded as they came
    plots = [m for m in messages if m["msg_type"] == "update_display_data" and "image/png" in m["content"]["data"]]
    assert len(plots) == 1  # entropy and probability, once the generation has ended
