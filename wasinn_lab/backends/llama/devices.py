"""The compute devices ggml sees (CPU, CUDA GPUs...), with their memory.

llama-cpp-python does not bind ggml's device API, so this binds the five functions it
needs from the ggml library llama-cpp-python already loaded.
"""

from __future__ import annotations

import ctypes
import functools
from pathlib import Path
from typing import Any

import llama_cpp

__all__ = ["devices"]

_TYPES = {0: "cpu", 1: "gpu", 2: "igpu", 3: "accel"}


@functools.cache
def _ggml() -> ctypes.CDLL:
    library = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml.so"))
    library.ggml_backend_dev_count.restype = ctypes.c_size_t
    library.ggml_backend_dev_get.argtypes = [ctypes.c_size_t]
    library.ggml_backend_dev_get.restype = ctypes.c_void_p
    for name in ("ggml_backend_dev_name", "ggml_backend_dev_description"):
        getattr(library, name).argtypes = [ctypes.c_void_p]
        getattr(library, name).restype = ctypes.c_char_p
    library.ggml_backend_dev_type.argtypes = [ctypes.c_void_p]
    library.ggml_backend_dev_type.restype = ctypes.c_int
    library.ggml_backend_dev_memory.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.POINTER(ctypes.c_size_t)]
    library.ggml_backend_dev_memory.restype = None
    return library


def devices() -> list[dict[str, Any]]:
    """Each device: name, description, type (cpu, gpu, igpu, accel), memory free and total."""
    ggml = _ggml()
    found = []
    for index in range(ggml.ggml_backend_dev_count()):
        device = ggml.ggml_backend_dev_get(index)
        free, total = ctypes.c_size_t(), ctypes.c_size_t()
        ggml.ggml_backend_dev_memory(device, ctypes.byref(free), ctypes.byref(total))
        found.append(
            {
                "name": ggml.ggml_backend_dev_name(device).decode(errors="replace"),
                "description": ggml.ggml_backend_dev_description(device).decode(errors="replace"),
                "type": _TYPES.get(ggml.ggml_backend_dev_type(device), "other"),
                "memory_free_bytes": free.value,
                "memory_total_bytes": total.value,
            }
        )
    return found
