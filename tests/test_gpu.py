"""CUDA: these run only where llama-cpp-python was built with CUDA (make ... CUDA=1) and a
GPU is present; elsewhere they skip, saying why. CI never has a GPU."""

from __future__ import annotations

import pytest

from wasinn_lab import Host
from wasinn_lab.backends.llama import gpu_offload_supported

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not gpu_offload_supported(), reason="no GPU: llama-cpp-python is a CPU build"),
]


def gpus(host: Host) -> list[dict]:
    return [d for d in host.properties()["backends"]["ggml"]["devices"] if d["type"] in ("gpu", "igpu")]


def test_properties_name_the_gpu_and_its_memory(host: Host) -> None:
    (gpu, *_) = gpus(host)
    assert gpu["memory_total_bytes"] > 0 and gpu["description"]


def test_every_layer_is_offloaded_when_asked(host: Host) -> None:
    host.register("gpu-model", host.registry.get("default").path, config={"n-gpu-layers": -1})
    try:
        model = host.properties("gpu-model")["model"]
        assert model["n_gpu_layers_offloaded"] == model["n_layers"] + 1  # as llama.cpp placed them
        assert all(device != "CPU" for device in model["layer_devices"])
        result = host.run("stream", "gpu-model", "Once upon a time", env={"n_predict": "16"})
        assert result.exit_code == 0 and result.stdout.strip()
    finally:
        host.registry.unregister("gpu-model")


def test_sessions_share_the_weights_on_the_gpu(host: Host) -> None:
    host.register("gpu-shared", host.registry.get("default").path, config={"n-gpu-layers": -1, "ctx-size": 1024})
    try:
        loaded = host.registry.load("gpu-shared")
        first = loaded.graph.init_execution_context(loaded.config)
        first.prepare()
        free_before = gpus(host)[0]["memory_free_bytes"]
        second = loaded.graph.init_execution_context(loaded.config)
        second.prepare()
        added = free_before - gpus(host)[0]["memory_free_bytes"]
        model_bytes = host.properties("gpu-shared")["model"]["model_size_bytes"]
        assert added < model_bytes / 2  # a KV cache, not another copy of the weights
        first.close()
        second.close()
    finally:
        host.registry.unregister("gpu-shared")
