# world: nn-guest
"""Standard wasi:nn (the WIT ABI) from Python: tensors in, tensors out.

    tensor_py echo             a round trip of named tensors through the echo backend
    tensor_py echo N           N timed round trips of one 1 MiB U8 tensor (a benchmark)
    tensor_py MODEL [PROMPT]   text from any other model, by the host's named-tensor convention

With `echo` it sends 15 named tensors in one `compute`: each of the seven tensor types
(FP16, FP32, FP64, BF16, U8, I32, I64) in two shapes, and one 1 MiB U8 tensor. Byte i of a
tensor is (i*31 + type*7 + shape) & 0xff, as in the `echo` guest. Each must come back
under its own name byte for byte, with its type and dimensions: a line
"ok NAME type=T dims=D bytes=N" each, then "tensor_py: 15 tensors came back unchanged";
on a difference "FAIL NAME: REASON" and the run fails.

With any other model it generates text: input `prompt`, a U8 tensor of the UTF-8 prompt
(PROMPT, else all of stdin), and `config`, a U8 tensor of a JSON object of parameters
built from the C guests' environment variables (n_predict=32 -> {"n-predict": 32}),
when any is set. Output `text` is printed, then "usage: " and output `usage` (JSON) on
stderr.

Built by guests.py (componentize-py, the world named on the first line).
"""

import json
import os
import sys
import time

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import graph
from wit_world.imports.tensor import Tensor, TensorType

# componentize-py's stdout loses whatever one write has past 64 KiB (unless built by
# wasinn-lab, whose build makes writes whole: wasinn_lab/shims.py): write at most this
# many characters at a time (4 bytes of UTF-8 each at most).
PIECE = 16 * 1024
SIZES = {TensorType.FP16: 2, TensorType.FP32: 4, TensorType.FP64: 8, TensorType.BF16: 2,
         TensorType.U8: 1, TensorType.I32: 4, TensorType.I64: 8}
SHAPES = [[1], [7], [2, 3], [2, 3, 4], [1, 1, 1, 5]]
MiB = 1 << 20

# (variable, config key, type): the variables of WasmEdge's examples, as guests/wasi_nn.h reads them.
OPTIONS = [
    ("n_predict", "n-predict", int), ("ctx_size", "ctx-size", int), ("n_gpu_layers", "n-gpu-layers", int),
    ("batch_size", "batch-size", int), ("ubatch_size", "ubatch-size", int), ("threads", "threads", int),
    ("temp", "temp", float), ("top_p", "top-p", float), ("top_k", "top-k", int), ("min_p", "min-p", float),
    ("repeat_penalty", "repeat-penalty", float), ("seed", "seed", int), ("reverse_prompt", "reverse-prompt", str),
    ("enable_log", "enable-log", bool), ("stream_stdout", "stream-stdout", bool), ("embedding", "embedding", bool),
]


class Exit(Exception):
    """Ends the run with a failure (a component's exit status is only ok or err)."""


def write(stream, text: str) -> None:
    for start in range(0, len(text), PIECE):
        stream.write(text[start:start + PIECE])
    stream.flush()


def call(what: str, function, *args):
    """function(*args); a wasi:nn error (a resource: code and data) is printed as
    "error: CALL failed: CODE: DATA", dropped, and ends the run."""
    try:
        return function(*args)
    except Err as e:
        error = e.value
        write(sys.stderr, f"error: {what} failed: {error.code().name.lower().replace('_', '-')}: {error.data()}\n")
        error.__exit__(None, None, None)
        raise Exit from None


def open_context(model: str):
    g = call("load-by-name", graph.load_by_name, model)
    return g, call("init-execution-context", g.init_execution_context)


def outputs_of(context, inputs: list) -> dict:
    """compute: the inputs' tensors are `own`, the host's from then on (never drop or
    `with` them afterwards); each output's type, dimensions and data, the tensor dropped."""
    outputs = {}
    for name, tensor in call("compute", context.compute, inputs):
        outputs[name] = (tensor.ty(), tensor.dimensions(), tensor.data())
        tensor.__exit__(None, None, None)
    return outputs


def pattern(n: int, ty: TensorType, shape: int) -> bytes:
    period = bytes((i * 31 + ty.value * 7 + shape) & 0xFF for i in range(256))  # it repeats every 256 bytes
    return (period * (n // 256 + 1))[:n]


def difference(sent: tuple, got: tuple | None) -> str | None:
    if got is None:
        return "no output of that name"
    (ty, dims, data), (got_ty, got_dims, got_data) = sent, got
    if got_ty != ty:
        return f"type {got_ty.name}, sent {ty.name}"
    if list(got_dims) != dims:
        return f"dims {got_dims}, sent {dims}"
    if len(got_data) != len(data):
        return f"{len(got_data)} bytes, sent {len(data)}"
    if got_data == data:
        return None
    for i, (a, b) in enumerate(zip(data, got_data)):
        if a != b:
            return f"first differing byte at offset {i} (sent {a:#04x}, got {b:#04x})"
    return None


def echo(model: str) -> None:
    sent = {}
    for ty, size in SIZES.items():
        for shape in (ty.value % len(SHAPES), (ty.value + 2) % len(SHAPES)):
            dims = SHAPES[shape]
            n = size
            for d in dims:
                n *= d
            sent[f"{ty.name.lower()}-{'x'.join(map(str, dims))}"] = (ty, dims, pattern(n, ty, shape))
    sent["big-u8"] = (TensorType.U8, [MiB], pattern(MiB, TensorType.U8, 0))

    g, context = open_context(model)
    got = outputs_of(context, [(name, Tensor(dims, ty, data)) for name, (ty, dims, data) in sent.items()])
    failures = 0
    for name, tensor in sent.items():
        why = difference(tensor, got.get(name))
        ty, dims, data = tensor
        line = f"type={ty.name} dims={'x'.join(map(str, dims))} bytes={len(data)}"
        if why is None:
            write(sys.stdout, f"ok {name} {line}\n")
        else:
            write(sys.stdout, f"FAIL {name} {line}: {why}\n")
            failures += 1
    context.__exit__(None, None, None)
    g.__exit__(None, None, None)
    if failures:
        raise Exit
    write(sys.stdout, f"tensor_py: {len(sent)} tensors came back unchanged\n")


def round_trips(model: str, count: int) -> None:
    """Each round trip: the tensor made (1 MiB into the host), compute, its data read back
    (1 MiB out), timed by the guest's clock; "round trip ms: ..." then the median."""
    data = pattern(MiB, TensorType.U8, 0)
    g, context = open_context(model)
    times = []
    for _ in range(count):
        started = time.perf_counter()
        got = outputs_of(context, [("big", Tensor([MiB], TensorType.U8, data))])
        times.append((time.perf_counter() - started) * 1e3)
        if got["big"][2] != data:
            write(sys.stdout, "FAIL big: the data came back changed\n")
            raise Exit
    context.__exit__(None, None, None)
    g.__exit__(None, None, None)
    ordered = sorted(times)
    write(sys.stdout, "round trip ms: " + " ".join(f"{t:.1f}" for t in times) + "\n")
    write(sys.stdout, f"median {ordered[len(ordered) // 2]:.1f} ms, best {ordered[0]:.1f} ms per 1 MiB round trip\n")


def config_from_env() -> dict:
    """The config JSON's members: numbers as numbers (one that does not parse is sent as a
    string, for the host to reject), reverse_prompt as a string, booleans 1/true/0/false."""
    config = {}
    for variable, key, kind in OPTIONS:
        text = os.environ.get(variable, "")
        if not text:
            continue
        if kind is bool:
            if text not in ("1", "true", "0", "false"):
                write(sys.stderr, f"error: {variable} must be 1, true, 0 or false\n")
                raise Exit
            config[key] = text in ("1", "true")
        elif kind is str:
            config[key] = text
        else:
            try:
                config[key] = kind(text)
            except ValueError:
                config[key] = text
    return config


def generate(model: str, prompt: str) -> None:
    data = prompt.encode()
    inputs = [("prompt", Tensor([len(data)], TensorType.U8, data))]
    if config := config_from_env():
        blob = json.dumps(config).encode()
        inputs.append(("config", Tensor([len(blob)], TensorType.U8, blob)))
    g, context = open_context(model)
    outputs = outputs_of(context, inputs)
    context.__exit__(None, None, None)
    g.__exit__(None, None, None)
    if "text" not in outputs:
        write(sys.stderr, f"error: compute gave no `text` output (outputs: {', '.join(outputs) or 'none'})\n")
        raise Exit
    write(sys.stdout, outputs["text"][2].decode("utf-8", "replace") + "\n")
    if "usage" in outputs:
        write(sys.stderr, f"usage: {outputs['usage'][2].decode('utf-8', 'replace')}\n")


class Run(exports.Run):
    def run(self) -> None:
        if not 2 <= len(sys.argv) <= 3:
            write(sys.stderr, "usage: tensor_py MODEL [PROMPT]\n")
            raise Err(None)
        model = sys.argv[1]
        try:
            if model == "echo" and len(sys.argv) == 3:
                round_trips(model, int(sys.argv[2]))
            elif model == "echo":
                echo(model)
            else:
                generate(model, sys.argv[2] if len(sys.argv) == 3 else sys.stdin.read())
        except Exit:
            raise Err(None) from None
