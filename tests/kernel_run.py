"""Run code in a real, fresh python3 kernel and keep every message it sent back."""

from __future__ import annotations

from typing import Any

from jupyter_client.manager import KernelManager


def execute(code: str, timeout: float) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The execute reply and the messages ``code`` produced, the kernel shut down after."""
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel()
    kernel = manager.client()
    try:
        kernel.start_channels()
        kernel.wait_for_ready(timeout=60)
        messages: list[dict[str, Any]] = []
        reply = kernel.execute_interactive(code, timeout=timeout, output_hook=messages.append)
    finally:
        kernel.stop_channels()
        manager.shutdown_kernel(now=True)
    return reply, messages
