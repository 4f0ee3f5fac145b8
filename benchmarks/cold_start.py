"""A cold start: how long after its process starts `wasinn-lab run` writes its first token.

    .venv/bin/python benchmarks/cold_start.py [--runs 15] [--prompt "Once upon a time"] [--baseline DIR]

Each round spawns, in turn, a fresh process of each of these and times it from just
before the spawn to the first byte it writes on stdout (a pipe, read unbuffered):

  python      `python -c` that writes one byte: the interpreter's own start
  llama_cpp   the same after `import llama_cpp` (llama-cpp-python, numpy with it)
  imports     the same after importing what `run` imports (wasinn_lab.cli, wasinn_lab.host)
  floor       a bare `python -c` that loads the default model with llama-cpp-python,
              makes a context as `run` does (ctx-size 4096, a thread per core), evaluates
              the prompt and writes the first token it picks (greedy): the least any
              Python program that uses llama-cpp-python pays
  run         `python -m wasinn_lab run --env n_predict=1 --env temp=0 stream default PROMPT`
  baseline    the same run from the checkout in --baseline DIR (e.g. `git worktree add`
              of an older commit), where one is given: before and after, side by side;
              with it, baseline_imports: the imports variant from that checkout

The spawns are interleaved round by round (the order turns each round), so a busy
moment of the machine falls on every variant alike. Prints the median time to the
first byte of each, its quartiles, and run / floor paired round by round. WasmEdge
(not installable here) reached its first token 0.52 s after its start where `run` took
0.92 s (issue 22, same guest, model and prompt): the reference to beat.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WASMEDGE_FIRST_TOKEN_S = 0.52

FLOOR = """
import os, sys
import llama_cpp as ll
model = ll.llama_model_load_from_file(sys.argv[1].encode(), ll.llama_model_default_params())
params = ll.llama_context_default_params()
params.n_ctx = 4096
params.n_threads = params.n_threads_batch = os.cpu_count()
ctx = ll.llama_init_from_model(model, params)
vocab = ll.llama_model_get_vocab(model)
prompt = sys.argv[2].encode()
tokens = (ll.llama_token * (len(prompt) + 2))()
n = ll.llama_tokenize(vocab, prompt, len(prompt), tokens, len(tokens), True, True)
ll.llama_decode(ctx, ll.llama_batch_get_one(tokens, n))
sampler = ll.llama_sampler_init_greedy()
token = ll.llama_sampler_sample(sampler, ctx, -1)
piece = ll.ctypes.create_string_buffer(64)
length = ll.llama_token_to_piece(vocab, token, piece, len(piece), 0, True)
sys.stdout.buffer.write(piece.raw[:max(length, 1)])
sys.stdout.flush()
"""


def commands(prompt: str, model: str, baseline: Path | None) -> dict[str, tuple[list[str], Path]]:
    """Each variant's command and the directory it runs in (`python -m` imports
    wasinn_lab from there)."""
    python = sys.executable
    first_byte = "import sys; sys.stdout.write('.'); sys.stdout.flush()"
    imports = [python, "-c", f"import wasinn_lab.cli, wasinn_lab.host; {first_byte}"]
    # The guest's environment variables, which every version of `run` takes.
    run = [python, "-m", "wasinn_lab", "run", "--env", "n_predict=1", "--env", "temp=0", "stream", "default", prompt]
    variants = {
        "python": ([python, "-c", first_byte], ROOT),
        "llama_cpp": ([python, "-c", f"import llama_cpp; {first_byte}"], ROOT),
        "imports": (imports, ROOT),
        "floor": ([python, "-c", FLOOR, model, prompt], ROOT),
        "run": (run, ROOT),
    }
    if baseline is not None:
        variants["baseline"] = (run, baseline)
        variants["baseline_imports"] = (imports, baseline)
    return variants


def first_byte_s(command: list[str], cwd: Path) -> float:
    """Seconds from just before the spawn to the first byte on the process's stdout."""
    # stderr to a file: llama.cpp's log, unread, would fill a pipe and stop the process.
    with tempfile.TemporaryFile() as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=stderr)
        assert process.stdout is not None
        first = os.read(process.stdout.fileno(), 1)
        seconds = time.perf_counter() - started
        process.communicate()
        if not first or process.returncode != 0:
            stderr.seek(0)
            raise SystemExit(f"{command[:4]}... failed ({process.returncode}):\n{stderr.read().decode(errors='replace')}")
    return seconds


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, median, q3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=15, help="rounds (each spawns every variant once)")
    parser.add_argument("--prompt", default="Once upon a time")
    parser.add_argument("--baseline", type=Path, default=None, metavar="DIR",
                        help="another checkout whose `run` to time beside this one's")
    options = parser.parse_args()

    from wasinn_lab.models import default_model_path

    variants = commands(options.prompt, str(default_model_path()), options.baseline)
    names = list(variants)
    for name in names:  # once each, unmeasured: page cache, compiled-guest cache, .pyc files
        first_byte_s(*variants[name])
    times: dict[str, list[float]] = {name: [] for name in names}
    load = []
    for round_ in range(options.runs):
        order = names[round_ % len(names):] + names[: round_ % len(names)]
        for name in order:
            times[name].append(first_byte_s(*variants[name]))
        load.append(os.getloadavg()[0])

    print(f"{options.runs} rounds, {os.cpu_count()} cores, load average {min(load):.2f} to {max(load):.2f}; "
          f"seconds from spawn to the first byte on stdout")
    print(f"{'':<16} {'median':>7} {'q1':>7} {'q3':>7}")
    for name in names:
        q1, median, q3 = quartiles(times[name])
        print(f"{name:<16} {median:7.3f} {q1:7.3f} {q3:7.3f}")
    for name in ("run", "baseline")[: 1 + (options.baseline is not None)]:
        q1, median, q3 = quartiles([mine / floor for mine, floor in zip(times[name], times["floor"], strict=True)])
        print(f"{name} / floor, paired by round: median {median:.3f} (q1 {q1:.3f}, q3 {q3:.3f})")
    if options.baseline is not None:
        for mine, before in (("run", "baseline"), ("imports", "baseline_imports")):
            q1, median, q3 = quartiles([a / b for a, b in zip(times[mine], times[before], strict=True)])
            print(f"{mine} / {before}, paired by round: median {median:.3f} (q1 {q1:.3f}, q3 {q3:.3f})")
    print(f"run, median {statistics.median(times['run']):.3f} s; WasmEdge's quoted first token: "
          f"{WASMEDGE_FIRST_TOKEN_S:.2f} s (another machine, less loaded: compare with the floor here)")


if __name__ == "__main__":
    main()
