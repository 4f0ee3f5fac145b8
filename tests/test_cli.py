"""The wasinn-lab command line, as a user runs it: a real subprocess."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from wasinn_lab.models import default_model_path


def wasinn_lab(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wasinn_lab", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_run_streams_a_guest_and_exits_with_its_status() -> None:
    result = wasinn_lab("run", "--env", "n_predict=5", "--env", "temp=0", "stream", "default", "Hello")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert '"output_tokens": 5' in result.stderr
    assert "panicked" not in result.stderr


def test_run_wires_stdin_through() -> None:
    result = wasinn_lab("run", "--env", "n_predict=4", "chat", "default", stdin="Hi there\nAnd again\n")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("usage: {") == 2


def test_run_passes_the_guest_exit_code_through() -> None:
    result = wasinn_lab("run", "complete")  # the guest's own usage error
    assert result.returncode == 1
    assert "usage: complete MODEL" in result.stderr


def test_preload_registers_models_by_name(tmp_path: Path) -> None:
    spec = f"mine:GGML:AUTO:{default_model_path()}"
    result = wasinn_lab("run", "--nn-preload", spec, "--env", "n_predict=3", "complete", "mine", "Hi")
    assert result.returncode == 0, result.stderr
    # With a preload given, `default` is not registered.
    result = wasinn_lab("run", "--nn-preload", spec, "complete", "default", "Hi")
    assert result.returncode == 2 and "not-found" in result.stderr


def test_preload_of_a_missing_file_warns_and_the_guest_gets_103(tmp_path: Path) -> None:
    result = wasinn_lab("run", "--nn-preload", f"gone:GGML:AUTO:{tmp_path / 'gone.gguf'}", "complete", "gone", "Hi")
    assert "wasinn-lab: warning: model 'gone'" in result.stderr
    assert "errno 103" in result.stderr and result.returncode == 2


def test_models_lists_registered_models(tmp_path: Path) -> None:
    result = wasinn_lab("models")
    assert result.returncode == 0
    names = [line.split("\t")[0] for line in result.stdout.splitlines()]
    assert names == ["echo", "default", "smollm2"]
    result = wasinn_lab("models", "--nn-preload", f"x:GGML:CPU:{tmp_path / 'x.gguf'}")
    assert "x\tggml\tcpu" in result.stdout and "[missing]" in result.stdout


PRESTAT_GUEST = """(module
  (import "wasi_snapshot_preview1" "fd_prestat_get" (func $prestat (param i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
  (memory (export "memory") 1)
  ;; Exit with the errno of asking about fd 3, the first preopened directory.
  (func (export "_start") (call $exit (call $prestat (i32.const 3) (i32.const 0)))))"""


def test_dir_preopens_a_directory_and_nothing_else(tmp_path: Path) -> None:
    guest = tmp_path / "prestat.wat"
    guest.write_text(PRESTAT_GUEST)
    assert wasinn_lab("run", "--dir", f"{tmp_path}:/data", str(guest)).returncode == 0
    assert wasinn_lab("run", str(guest)).returncode == 8  # EBADF: no directory given


def test_a_trap_is_reported_with_its_own_exit_status(tmp_path: Path) -> None:
    guest = tmp_path / "trap.wat"
    guest.write_text('(module (memory (export "memory") 1) (func (export "_start") unreachable))')
    result = wasinn_lab("run", str(guest))
    assert result.returncode == 128
    assert "guest trapped" in result.stderr and "unreachable" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_arguments_get_one_line_errors(tmp_path: Path) -> None:
    cases = {
        ("run", "--nn-preload", "nonsense", "stream"): "expected NAME:ENCODING:TARGET:PATH",
        ("run", "--nn-preload", "a:XYZ:AUTO:/m.gguf", "stream"): "unknown encoding 'XYZ'",
        ("run", "--nn-preload", "a:GGML:QPU:/m.gguf", "stream"): "unknown target 'QPU'",
        ("run", "--env", "NOVALUE", "stream"): "expected KEY=VALUE",
        ("run", "--dir", str(tmp_path / "nope"), "stream"): "is not a directory",
        ("run", "no-such-guest"): "unknown guest 'no-such-guest'",
        ("run", str(tmp_path / "missing.wasm")): "does not exist",
    }
    for args, message in cases.items():
        result = wasinn_lab(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr


def test_invalid_module_is_a_clear_error(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.wasm"
    bogus.write_bytes(b"\0asm garbage")
    result = wasinn_lab("run", str(bogus))
    assert result.returncode == 2 and "not a valid WebAssembly module" in result.stderr


def test_guests_build_builds_every_guest() -> None:
    result = wasinn_lab("guests", "build")
    assert result.returncode == 0, result.stderr
    built = {Path(line).name for line in result.stdout.split()}
    assert {"complete.wasm", "stream.wasm", "chat.wasm", "echo.wasm", "embed.wasm", "probe.wasm"} <= built


def test_limits_from_the_command_line(tmp_path: Path) -> None:
    guest = tmp_path / "spin.wat"
    guest.write_text('(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))')
    result = wasinn_lab("run", "--timeout", "0.5", str(guest))
    assert result.returncode == 128 and "ran past its time limit of 0.5 s" in result.stderr
    result = wasinn_lab("run", "--fuel", "5000", str(guest))
    assert result.returncode == 128 and "used all its fuel (5,000)" in result.stderr
    result = wasinn_lab("run", "--timeout", "-3", str(guest))
    assert result.returncode == 2 and "timeout must be positive" in result.stderr
    tables = tmp_path / "tables.wat"
    tables.write_text('(module (table 1 funcref) (table 1 funcref) (memory (export "memory") 1) (func (export "_start")))')
    result = wasinn_lab("run", "--limit", "tables=1", str(tables))
    assert result.returncode == 128 and "more than its limit of 1 tables" in result.stderr
    assert wasinn_lab("run", str(tables)).returncode == 0  # two tables are within the default
    result = wasinn_lab("run", "--limit", "colour=1", str(tables))
    assert result.returncode == 2 and "no limit named 'colour'; the limits are: timeout" in result.stderr


def test_bench_rejects_bad_sweeps_and_too_few_runs() -> None:
    result = wasinn_lab("bench", "--runs", "2")
    assert result.returncode == 2 and "--runs must be at least 5" in result.stderr
    result = wasinn_lab("bench", "--sweep", "colour=1,2")
    assert result.returncode == 2 and "expected PARAM=V1,V2,..." in result.stderr
    result = wasinn_lab("bench", "--sweep", "threads=one")
    assert result.returncode == 2 and "values must be integers" in result.stderr


def stopped_while_generating(stop: Callable[[subprocess.Popen[bytes]], None], *options: str) -> tuple[int, bytes]:
    """The stream guest started on a long generation and, once its tokens come, ``stop``
    done to it: how it ended (its status) and what it said (stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "wasinn_lab", "run", *options, "stream", "default", "Once upon a time"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None and process.stdout.read(40)  # it is generating
        stop(process)
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stderr


def test_ctrl_c_ends_a_generating_guest_with_one_line() -> None:
    status, stderr = stopped_while_generating(lambda process: process.send_signal(signal.SIGINT),
                                              "--env", "n_predict=100000", "--env", "temp=0")
    assert status == 130
    assert b"wasinn-lab: interrupted" in stderr and b"Traceback" not in stderr


def test_what_a_failed_wasi_nn_call_said_reaches_stderr() -> None:
    """The guest sees errno 1 and says so; the person also sees why."""
    result = wasinn_lab("run", "--env", "ctx_size=1000000000", "complete", "default", "Hello")
    assert result.returncode == 2
    assert "wasinn-lab: wasi-nn init_execution_context failed: ctx-size 1000000000 is over the model's " \
           "context length 32768" in result.stderr
    assert "init_execution_context failed: errno 1" in result.stderr  # the guest's own line, after it


def test_options_lists_each_backends_parameters_and_the_docs_show_the_same() -> None:
    listed = wasinn_lab("options")
    assert listed.returncode == 0 and "temp" in listed.stdout and "sampling temperature" in listed.stdout
    markdown = wasinn_lab("options", "--markdown").stdout.strip()
    page = (Path(__file__).parent.parent / "docs" / "parameters.md").read_text()
    block = page.split("tests/test_cli.py checks it -->\n", 1)[1].split("\n<!-- /options -->", 1)[0]
    assert block == markdown, "docs/parameters.md's table is stale: paste `wasinn-lab options --markdown` in"


def test_run_takes_parameters_as_a_cell_does() -> None:
    """``-p`` as ``%%wasi_nn -p`` spells it; ``--env`` spelled like a parameter is pointed to ``-p``."""
    result = wasinn_lab("run", "-p", "n-predict=3", "--param", "temp=0", "--env", "n-predict=3", "stream", "default", "Hi")
    assert result.returncode == 0, result.stderr
    assert '"output_tokens": 3' in result.stderr
    assert "wasinn-lab: warning: --env n-predict=3 sets an environment variable, which the guests in guests/ read " \
           "as n_predict; for a parameter, checked, use -p n-predict=3" in result.stderr


def test_a_parameter_with_a_wrong_name_or_value_is_refused_before_the_guest_starts() -> None:
    unknown = wasinn_lab("run", "-p", "colour=1", "stream", "default", "Hi")
    assert unknown.returncode == 2, unknown.stderr
    assert "wasinn-lab: error: no parameter 'colour'; the parameters are: batch-size," in unknown.stderr
    assert "n-predict" in unknown.stderr and "usage: {" not in unknown.stderr  # the guest never ran
    bad = wasinn_lab("run", "-p", "temp=hot", "stream", "default", "Hi")
    assert bad.returncode == 2 and "wasinn-lab: error: parameter 'temp' takes a number of at least 0, got 'hot'" \
        in bad.stderr
    shapeless = wasinn_lab("run", "-p", "temp", "stream", "default", "Hi")
    assert shapeless.returncode == 2 and "argument -p/--param: expected KEY=VALUE, got 'temp'" in shapeless.stderr


def test_options_says_how_runs_take_the_parameters() -> None:
    result = wasinn_lab("options", "--help")
    assert "-p NAME=VALUE" in result.stdout and "--env n_predict=16" in result.stdout


def test_a_config_that_is_not_json_is_quoted_where_it_breaks() -> None:
    """The guests write a number's variable into their config raw: the person sees that config."""
    result = wasinn_lab("run", "--env", "n_predict=lots", "stream", "default", "Hi")
    assert result.returncode == 2
    assert "wasinn-lab: wasi-nn load_by_name_with_config failed: config is not valid JSON (expecting value at " \
           'line 1, column 14):\n    {"n-predict":lots}\n                 ^\n' in result.stderr


def test_a_long_config_is_cut_around_where_it_breaks() -> None:
    from wasinn_lab.abi.conventions import parse_config as parse_config_json
    from wasinn_lab.errors import InvalidEncoding

    raw = b'{"grammar": "' + b"a" * 200 + b'", oops, "reverse-prompt": "' + b"b" * 200 + b'"}'
    with pytest.raises(InvalidEncoding) as caught:
        parse_config_json(raw)
    message, quoted, caret = str(caught.value).split("\n")
    assert message == "config is not valid JSON (expecting property name enclosed in double quotes at line 1, " \
                      "column 217):"
    assert quoted.startswith("    …aaa") and quoted.endswith("bbb…") and len(quoted) <= 4 + 2 + 72
    assert quoted[len(caret) - 1 :].startswith("oops")
    with pytest.raises(InvalidEncoding, match=r"config is not valid UTF-8 \(invalid start byte at byte 6\):\n"
                                              r"    \{\"x\":\"\\xff\"\}\n          \^"):
        parse_config_json(b'{"x":"\xff"}')


def test_run_help_names_the_guests_arguments_and_shows_examples() -> None:
    result = wasinn_lab("run", "--help")
    assert result.returncode == 0
    assert "usage: wasinn-lab run [OPTIONS] GUEST [MODEL [PROMPT]]" in result.stdout
    assert "The guests in guests/ take MODEL [PROMPT]" in result.stdout
    assert 'examples:\n  wasinn-lab run stream default "Once upon a time"' in result.stdout
    assert "printf 'Hello!\\nTell me a joke.\\n' | wasinn-lab run chat default" in result.stdout
    alone = wasinn_lab("run")
    assert alone.returncode == 2
    assert 'wasinn-lab run: error: which guest? e.g. wasinn-lab run stream default "Once upon a time"' in alone.stderr
    assert "required" not in alone.stderr


def test_version_names_what_runs_the_guests() -> None:
    result = wasinn_lab("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("wasinn-lab 0.1.0 (wasmtime ")
    assert "llama-cpp-python 0.3." in result.stdout


def test_a_missing_model_file_ends_without_resource_warnings(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-W", "error::ResourceWarning", "-m", "wasinn_lab", "run", "--nn-preload",
         f"gone:GGML:AUTO:{tmp_path / 'gone.gguf'}", "complete", "gone", "Hi"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2 and "errno 103" in result.stderr
    assert "ResourceWarning" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


def test_a_reader_that_goes_away_ends_the_run_as_it_ends_cat() -> None:
    """``wasinn-lab run ... | head -c 40``: no BrokenPipeError, no generating on for nobody."""
    def close_the_pipe(process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        process.stdout.close()

    status, stderr = stopped_while_generating(close_the_pipe, "-p", "n-predict=400", "-p", "temp=0")
    assert status == -signal.SIGPIPE, stderr
    assert b"Traceback" not in stderr and b"BrokenPipeError" not in stderr
    assert b"usage: {" not in stderr  # it ended there, not after 400 tokens


def test_importing_the_command_line_imports_no_notebook_or_table_library() -> None:
    script = ("import sys, wasinn_lab.cli; heavy = {'pandas', 'matplotlib', 'ipywidgets', 'IPython'}; "
              "print(sorted({name.split('.')[0] for name in sys.modules} & heavy))")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
