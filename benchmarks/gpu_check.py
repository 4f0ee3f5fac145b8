"""The GPU check: CUDA llama.cpp verified, then measured.

    make install CUDA=1 CUDA_ARCH=90
    .venv/bin/python benchmarks/gpu_check.py [--model PATH.gguf] [--runs 5]

1. llama-cpp-python reports GPU offload support and ggml lists a GPU (name, memory).
2. The `stream` guest runs with every layer offloaded, and the model reports them all
   offloaded.
3. GPU against CPU, and guest against direct llama-cpp-python on the GPU: decode rates,
   side by side in this run (target: guest at least 0.95 of direct on the GPU).
4. What a second session costs on the GPU (one copy of the weights, several contexts).
Exits 1 if the build or the offload does not check out.
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys

from wasinn_lab import Host
from wasinn_lab.backends.llama import gpu_offload_supported
from wasinn_lab.bench import Bench, Workload


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a GGUF model (default: the bundled default model)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n-predict", type=int, default=128)
    options = parser.parse_args()

    host = Host(default_model=options.model is None)
    if options.model:
        host.register("default", options.model)
    if not gpu_offload_supported():
        print("FAIL  llama-cpp-python has no GPU offload: build it with `make install CUDA=1`")
        return 1
    devices = host.properties()["backends"]["ggml"]["devices"]
    gpus = [d for d in devices if d["type"] in ("gpu", "igpu")]
    for device in devices:
        print(f"device  {device['name']}: {device['description']} ({device['type']}, "
              f"{device['memory_total_bytes'] / 2**30:.1f} GiB, {device['memory_free_bytes'] / 2**30:.1f} GiB free)")
    if not gpus:
        print("FAIL  ggml lists no GPU")
        return 1

    host.register("offloaded", host.registry.get("default").path, config={"n-gpu-layers": -1})
    model = host.properties("offloaded")["model"]
    offloaded, layers = model["n_gpu_layers_offloaded"], model["n_layers"] + 1
    result = host.run("stream", "offloaded", "The GPU says", env={"n_predict": "32"})
    ok = result.exit_code == 0 and offloaded == layers
    print(f"{'PASS' if ok else 'FAIL'}  stream guest with every layer offloaded: {offloaded}/{layers} layers, "
          f"exit {result.exit_code}, {len(result.stdout.split())} words")
    if not ok:
        return 1

    print(f"machine: {platform.machine()}, GPU {gpus[0]['description']}")
    with Bench(host) as bench:
        for label, layers_on_gpu in (("GPU", -1), ("CPU", 0)):
            frame = bench.compare(Workload(n_predict=options.n_predict, n_gpu_layers=layers_on_gpu), options.runs)
            summary = Bench.summary(frame)
            print(f"\n{label} (n-gpu-layers {layers_on_gpu})")
            print(Bench.table(frame).to_string())
            if label == "GPU":
                ratio = summary.loc["guest-stream", "decode_ratio"]
                print(f"{'PASS' if ratio >= 0.95 else 'MISS'}  streaming guest / direct on the GPU: {ratio:.3f} (target >= 0.95)")

    sessions = []
    free = [gpus_free(host)]
    for _ in range(4):
        session = host.open_session("offloaded", {"ctx-size": 4096})
        session.reload()  # its context, on the GPU, now
        sessions.append(session)
        free.append(gpus_free(host))
    per_session = [(a - b) / 2**20 for a, b in itertools.pairwise(free)]
    print(f"\nGPU memory per added session (ctx-size 4096): {', '.join(f'{mib:.0f}' for mib in per_session)} MiB;"
          f" the weights are {model['model_size_bytes'] / 2**20:.0f} MiB, loaded once")
    for session in sessions:
        session.close()
    return 0


def gpus_free(host: Host) -> int:
    return sum(d["memory_free_bytes"] for d in host.properties()["backends"]["ggml"]["devices"] if d["type"] == "gpu")


if __name__ == "__main__":
    sys.exit(main())
