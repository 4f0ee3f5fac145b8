"""What the option logprobs costs a token: the same sampler settings with it off (llama.cpp's
llama_sampler_sample) and on (the same sampling by hand, with the model's softmax, entropy,
rank and top-K read first), on the same logits, token by token along one generation.

    .venv/bin/python benchmarks/logprobs.py [--tokens 200] [--logprobs 5]

At each step both samplers sample from the same logits (copied back before each; which one
goes first alternates); both must pick the same token, which is then decoded. The figures
are medians with their interquartile range; the cost is the paired difference, on less off.
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


def spread(samples: list[float], scale: float = 1e6) -> str:
    q1, median, q3 = statistics.quantiles(samples, n=4)
    return f"{median * scale:.0f} us (IQR {q1 * scale:.0f}-{q3 * scale:.0f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=200)
    parser.add_argument("--logprobs", type=int, default=5)
    options = parser.parse_args()
    config = {**OPTIONS.defaults, "ctx-size": 1024, "seed": 1}  # temp 0.8, top-k 40, top-p 0.95, min-p 0.05
    weights = weights_cache.acquire(default_model_path(), OPTIONS.scoped(config, Scope.MODEL))
    with log.Section(False):  # llama.cpp's report of the context it makes: not worth printing
        native = NativeContext(weights, context_params(config, weights))
    samplers = {"off": make_sampler(weights, config, native.n_ctx),
                "on": make_sampler(weights, {**config, "logprobs": options.logprobs}, native.n_ctx)}
    times: dict[str, list[float]] = {name: [] for name in samplers}
    try:
        prompt = weights.tokenize(b"The history of the city begins with")
        native.decode(prompt, 0)
        pointer = ctypes.cast(llama_cpp.llama_get_logits_ith(native.ctx, -1), ctypes.POINTER(ctypes.c_float))
        for step in range(options.tokens):
            logits = np.ctypeslib.as_array(pointer, (weights.n_vocab,))
            saved = logits.copy()
            order = list(samplers.items()) if step % 2 == 0 else list(reversed(samplers.items()))
            chosen: dict[str, int] = {}
            for name, sampler in order:
                logits[:] = saved
                started = time.perf_counter()
                chosen[name] = sampler.sample(native, -1)
                times[name].append(time.perf_counter() - started)
            if chosen["on"] != chosen["off"]:
                raise SystemExit(f"token {step}: logprobs on sampled {chosen['on']}, off {chosen['off']}")
            native.decode([chosen["off"]], len(prompt) + step)
    finally:
        for sampler in samplers.values():
            sampler.close()
        native.close()
        weights_cache.release(weights)
    costs = [on - off for on, off in zip(times["on"], times["off"])]
    ratios = [on / off for on, off in zip(times["on"], times["off"])]
    q1, _, q3 = statistics.quantiles(ratios, n=4)
    print(f"logprobs off: {spread(times['off'])} per token; on (K={options.logprobs}): {spread(times['on'])}")
    print(f"cost of logprobs, paired (on - off): {spread(costs)} per token; on / off {statistics.median(ratios):.2f}x "
          f"(IQR {q1:.2f}-{q3:.2f}); {options.tokens} tokens, the same in both; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
