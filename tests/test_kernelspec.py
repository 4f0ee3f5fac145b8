"""``wasinn-lab kernel install``: the kernel spec in kernels/wasinn-lab, installed where
Jupyter looks for it. Installs go into temporary prefixes and data directories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jupyter_client.kernelspec import KernelSpecManager

from wasinn_lab import kernelspec
from wasinn_lab.cli import main

REPO_SPEC = Path(__file__).resolve().parent.parent / "kernels" / "wasinn-lab" / "kernel.json"


def wasinn_lab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "wasinn_lab", *args], capture_output=True, text=True, timeout=120)


def test_the_spec_runs_ipykernel_with_the_extension_on_any_python() -> None:
    spec = json.loads(REPO_SPEC.read_text())
    assert spec["argv"] == ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}", "--ext=wasinn_lab.notebook"]
    assert spec["display_name"] == "Python 3 (wasinn-lab)"
    assert spec["language"] == "python"
    assert spec["interrupt_mode"] == "signal"
    assert kernelspec.kernel_dir() == REPO_SPEC.parent  # found from the package


def test_install_sys_prefix_puts_the_spec_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    prefix = tmp_path / "env"
    monkeypatch.setattr(sys, "prefix", str(prefix))
    assert main(["kernel", "install", "--sys-prefix"]) == 0
    destination = prefix / "share" / "jupyter" / "kernels" / "wasinn-lab"
    assert capsys.readouterr().out.strip() == f"installed kernel spec wasinn-lab in {destination}"
    assert json.loads((destination / "kernel.json").read_text()) == json.loads(REPO_SPEC.read_text())
    # What Jupyter reads from there.
    found = KernelSpecManager(kernel_dirs=[str(destination.parent)]).get_kernel_spec("wasinn-lab")
    assert found.display_name == "Python 3 (wasinn-lab)" and found.argv[-1] == "--ext=wasinn_lab.notebook"


def test_install_user_under_another_name_and_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(tmp_path / "data"))
    destination = tmp_path / "data" / "kernels" / "my-lab"
    (destination / "stale.txt").parent.mkdir(parents=True)
    (destination / "stale.txt").write_text("from an older install")
    for _ in range(2):  # installing again replaces what is there
        assert main(["kernel", "install", "--user", "--name", "My-Lab"]) == 0  # Jupyter lowercases names
        assert capsys.readouterr().out.strip() == f"installed kernel spec my-lab in {destination}"
    assert sorted(p.name for p in destination.iterdir()) == ["kernel.json"]
    assert KernelSpecManager().get_kernel_spec("my-lab").language == "python"  # on the user's Jupyter path


def test_install_failures_are_one_line_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_a_directory = tmp_path / "file"
    not_a_directory.write_text("")
    monkeypatch.setattr(sys, "prefix", str(not_a_directory))
    with pytest.raises(SystemExit) as exit_info:
        main(["kernel", "install", "--sys-prefix"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("wasinn-lab: error: cannot install the kernel spec: ") and str(not_a_directory) in line

    monkeypatch.setattr(kernelspec, "KERNELS_DIR", tmp_path / "nowhere")
    with pytest.raises(SystemExit) as exit_info:
        main(["kernel", "install", "--user"])
    assert exit_info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"wasinn-lab: error: no kernel spec at {tmp_path / 'nowhere' / 'wasinn-lab'}")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("kernel", "install", "--user", "--sys-prefix"), "argument --sys-prefix: not allowed with argument --user"),
        (("kernel", "install", "--name", "two words"), "Invalid kernel name 'two words'."),
        (("kernel", "install", "--prefix", "/tmp"), "unrecognized arguments: --prefix"),
        (("kernel", "remove"), "invalid choice: 'remove'"),
        (("kernel",), "the following arguments are required"),
    ],
)
def test_bad_options_get_one_line_errors(args: tuple[str, ...], message: str) -> None:
    result = wasinn_lab(*args)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and message in errors[0], result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
