"""What a token's sampling costs: llama.cpp's own chain against the host's (the repeat
penalty on the window's logits alone), the same logits, alternated call by call.

    .venv/bin/python benchmarks/sampling.py [--calls 400]

Each call samples once from the same context's last logits, copied back before each so
both samplers see the same values; the figures are medians with their interquartile range.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import time

import llama_cpp
import numpy as np

from wasinn_lab.backends.llama import log
from wasinn_lab.backends.llama.context import context_params
from wasinn_lab.backends.llama.native import NativeContext
from wasinn_lab.backends.llama.options import OPTIONS
from wasinn_lab.backends.llama.sampling import make_sampler
from wasinn_lab.backends.llama.weights import weights_cache
from wasinn_lab.models import default_model_path
from wasinn_lab.options import Scope


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=400)
    options = parser.parse_args()
    # The penalty the window path exists for (the default, 1.0, applies none), over 64 tokens.
    config = {**OPTIONS.defaults, "ctx-size": 1024, "seed": 1, "repeat-penalty": 1.1}
    weights = weights_cache.acquire(default_model_path(), OPTIONS.scoped(config, Scope.MODEL))
    with log.Section(False):  # llama.cpp's report of the context it makes: not worth printing
        native = NativeContext(weights, context_params(config, weights))
    try:
        prompt = weights.tokenize(b"The history of the city begins with")
        native.decode(prompt, 0)
        pointer = ctypes.cast(llama_cpp.llama_get_logits_ith(native.ctx, -1), ctypes.POINTER(ctypes.c_float))
        logits = np.ctypeslib.as_array(pointer, (weights.n_vocab,))
        saved = logits.copy()
        samplers = {"llama.cpp": make_sampler(weights, config, native.n_ctx, window_penalty=False),
                    "window": make_sampler(weights, config, native.n_ctx)}
        times: dict[str, list[float]] = {name: [] for name in samplers}
        for _ in range(options.calls):
            for name, sampler in samplers.items():
                logits[:] = saved
                started = time.perf_counter()
                sampler.sample(native, -1)
                times[name].append(time.perf_counter() - started)
        for sampler in samplers.values():
            sampler.close()
    finally:
        native.close()
        weights_cache.release(weights)
    ratios = [a / b for a, b in zip(times["llama.cpp"], times["window"])]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    for name, samples in times.items():
        print(f"{name}: {statistics.median(samples) * 1e6:.0f} us per token (median of {options.calls})")
    print(f"llama.cpp / window, paired: {statistics.median(ratios):.2f}x (IQR {q1:.2f}-{q3:.2f}); "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
