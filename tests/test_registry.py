from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from wasinn_lab import ConfigError, GraphEncoding, Host, MissingModelWarning, ModelNotFound, NotFound
from wasinn_lab.backends.llama import gpu_offload_supported
from wasinn_lab.backends.llama.devices import devices
from wasinn_lab.models import SMOLLM2_CONFIG, SMOLLM2_MODEL, default_model_path, smollm2_path
from wasinn_lab.registry import parse_preload
from wasinn_lab.types import ExecutionTarget


def test_parse_preload_keeps_colons_in_the_path() -> None:
    assert parse_preload("default:GGML:AUTO:/models/a:b.gguf") == (
        "default",
        GraphEncoding.GGML,
        ExecutionTarget.AUTO,
        "/models/a:b.gguf",
    )


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("default", "expected NAME:ENCODING:TARGET:PATH"),
        (":GGML:AUTO:/m.gguf", "expected NAME:ENCODING:TARGET:PATH"),
        ("a:GGUF:AUTO:/m.gguf", "unknown encoding 'GGUF'; use one of"),
        ("a:GGML:NPU:/m.gguf", "unknown target 'NPU'; use one of"),
    ],
)
def test_parse_preload_errors_say_what_to_fix(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_preload(spec)


def test_register_checks_the_default_config() -> None:
    host = Host(default_model=False)
    with pytest.raises(ConfigError, match="'ctx-size' takes an integer"):
        host.register("m", "/tmp/m.gguf", config={"ctx_size": "large"})
    assert "m" not in host.registry


def test_register_a_missing_file_warns_but_registers(tmp_path: Path) -> None:
    host = Host(default_model=False)
    with pytest.warns(MissingModelWarning, match="does not exist"):
        spec = host.register("later", tmp_path / "later.gguf")
    assert not spec.available and "later" in host.registry


def test_ggml_models_need_a_path_and_echo_needs_none() -> None:
    host = Host(default_model=False)
    with pytest.raises(ConfigError, match="needs a file path"):
        host.register("nofile")
    assert host.register("echo2", encoding="echo").available


@pytest.mark.parametrize("name", ["", "a:b"])
def test_model_names_are_checked(name: str) -> None:
    with pytest.raises(ConfigError, match="must be non-empty and contain no ':'"):
        Host(default_model=False).register(name, encoding="echo")


def test_unknown_names_list_what_is_registered() -> None:
    host = Host(default_model=False)
    with pytest.raises(NotFound, match=r"registered: echo"):
        host.registry.get("nope")
    with pytest.raises(NotFound):
        host.registry.unregister("nope")


def test_properties_report_backends_and_the_model(host: Host) -> None:
    properties = host.properties("default")
    llama = properties["backends"]["ggml"]
    assert llama["gpu_offload_supported"] in (True, False)
    assert "llama_cpp_python_version" in llama
    model = properties["model"]
    assert model["n_params"] > 200_000_000 and model["n_layers"] > 0
    if not llama["gpu_offload_supported"]:
        assert model["n_gpu_layers_offloaded"] == 0


def test_the_offload_reported_is_where_llama_cpp_put_each_layer(host: Host) -> None:
    # Asked for every layer: a CUDA build puts them on the GPU, a CPU build truthfully on the CPU.
    host.register("all-layers", default_model_path(), config={"n-gpu-layers": -1})
    try:
        model = host.properties("all-layers")["model"]
    finally:
        host.registry.unregister("all-layers")
    placed = model["layer_devices"]
    assert len(placed) == model["n_layers"] + 1  # the output layer too, as llama.cpp counts
    cpus = {device["name"] for device in devices() if device["type"] == "cpu"}
    on_devices = sum(1 for device in placed if device not in cpus)
    assert model["n_gpu_layers_offloaded"] == on_devices == (len(placed) if gpu_offload_supported() else 0)



_MAPPED = """
import sys
from pathlib import Path
from wasinn_lab import Host
from wasinn_lab.models import default_model_path
path = str(default_model_path().resolve())
with Host() as host:
    host.register("m", default_model_path(), config={"use-mmap": sys.argv[1] == "on"})
    with host.open_session("m"):
        print(any(line.rstrip().endswith(path) for line in Path("/proc/self/maps").read_text().splitlines()))
"""


@pytest.mark.model
@pytest.mark.parametrize(("use_mmap", "mapped"), [("on", "True"), ("off", "False")])
def test_use_mmap_says_whether_the_model_file_is_mapped(use_mmap: str, mapped: str) -> None:
    """`use-mmap` set an attribute llama-cpp-python 0.3.36's params no longer have (ctypes
    took it silently), so the file was mapped whatever it said."""
    done = subprocess.run([sys.executable, "-c", _MAPPED, use_mmap], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == mapped


def test_smollm2_is_registered_beside_the_default_with_bounded_generation() -> None:
    with Host() as host:
        spec = host.registry.get(SMOLLM2_MODEL)
        assert spec.path == smollm2_path() and spec.available  # `make model` fetched it
        assert dict(spec.config) == SMOLLM2_CONFIG
    with Host(default_model=False) as bare:  # the bundled models come together, or not at all
        assert [spec.name for spec in bare.models()] == ["echo"]


@pytest.mark.model
def test_smollm2_generates_through_a_guest(host: Host) -> None:
    result = host.run("stream", SMOLLM2_MODEL, "Name three colours.", params={"temp": 0, "n-predict": 6})
    assert result.exit_code == 0 and result.stdout.strip() and not result.errors
    model = host.properties(SMOLLM2_MODEL)["model"]
    assert model["metadata"]["general.architecture"] == "llama"  # a second architecture: the default is gemma3


def test_a_missing_smollm2_says_to_run_make_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Registered without its file, it warns of nothing (it is fetched by `make model`, not
    by pip), and whoever loads it is told how to get it."""
    cache = tmp_path / "cache"
    (cache / "models").mkdir(parents=True)
    (cache / "models" / default_model_path().name).symlink_to(default_model_path())
    monkeypatch.setenv("WASINN_LAB_CACHE", str(cache))
    with warnings.catch_warnings():
        warnings.simplefilter("error", MissingModelWarning)
        host = Host()
    with host:
        assert not host.registry.get(SMOLLM2_MODEL).available
        with pytest.raises(ModelNotFound, match=r"SmolLM2-135M-Instruct\.Q4_1\.gguf does not exist: `make model`"):
            host.registry.load(SMOLLM2_MODEL)
        result = host.run("complete", SMOLLM2_MODEL, "Hi")
    assert result.exit_code != 0 and any("`make model` fetches it" in error for error in result.errors)
