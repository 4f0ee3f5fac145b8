# world: llm-chat-guest
"""Multi-turn chat on the wasinn:llm text interface: the `chat` guest as a Python component.

    chat_py MODEL        (turns on stdin, one per line)

One turn per stdin line (trailing CR/LF stripped, empty lines skipped, it stops at EOF).
The conversation starts empty; each turn appends "User: LINE\\nAssistant:" and generates
from the whole conversation, so the host reuses the prefix it has already evaluated. The
reply streams to stdout chunk by chunk and stops where the model starts writing the
user's next turn ("\\nUser:"): that marker is never printed (text that could still become
it is held back until the next chunk decides) and the generation is cancelled there.
After each turn, "usage: {JSON}" on stderr, as the C guests print it.

Options come from the C guests' environment variables (n_predict, temp, seed, ...), set
as the context's parameters of the same name with "-" for "_". It exports stdin-turns,
which tells a host to feed it one turn at a time (a notebook cell is one turn).

Built by guests.py (componentize-py, the world named on the first line).
"""

import json
import os
import sys

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import graphs
from wit_world.imports.types import ErrorCode, Value_Boolean, Value_Integer, Value_Number, Value_Text

MARKER = "\nUser:"
# componentize-py's stdout loses whatever one write has past 64 KiB (unless built by
# wasinn-lab, whose build makes writes whole: wasinn_lab/shims.py): write at most this
# many characters at a time (4 bytes of UTF-8 each at most).
PIECE = 16 * 1024

# (variable, parameter, type): the variables of WasmEdge's examples, as guests/wasi_nn.h reads them.
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


def fail(call: str, error) -> None:
    """A wasinn:llm error as the C guests print theirs: "error: CALL failed: CODE (NAME): MESSAGE"."""
    code = error.code.name.lower().replace("_", "-")
    name = f" ({error.name})" if error.name is not None else ""
    write(sys.stderr, f"error: {call} failed: {code}{name}: {error.message}\n")
    raise Exit


def call(what: str, function, *args):
    """function(*args), its error reported as `what` failing."""
    try:
        return function(*args)
    except Err as e:
        fail(what, e.value)


def parameters_from_env() -> list:
    """(name, value) for each option variable that is set. A number that does not parse is
    sent as text, so that the host rejects it and names it; a bad boolean is a usage error."""
    parameters = []
    for variable, name, kind in OPTIONS:
        text = os.environ.get(variable, "")
        if not text:
            continue
        if kind is bool:
            if text not in ("1", "true", "0", "false"):
                write(sys.stderr, f"error: {variable} must be 1, true, 0 or false\n")
                raise Exit
            value = Value_Boolean(text in ("1", "true"))
        elif kind is str:
            value = Value_Text(text)
        else:
            try:
                value = Value_Integer(int(text)) if kind is int else Value_Number(float(text))
            except ValueError:
                value = Value_Text(text)
        parameters.append((name, value))
    return parameters


def marker_tail(text: str) -> int:
    """Length of the longest tail of `text` that could still grow into MARKER."""
    for k in range(len(MARKER) - 1, 0, -1):
        if text.endswith(MARKER[:k]):
            return k
    return 0


def turn(context, conversation: str) -> str:
    """Streams one reply to `conversation`; returns it (without the marker)."""
    generation = call("generate", context.generate, conversation)
    reply, shown = "", 0
    with generation:  # dropped at the end of the turn: the host frees it now
        while True:
            try:
                chunk = generation.next_chunk()
            except Err as e:
                if e.value.code != ErrorCode.TOO_LARGE:
                    fail("next-chunk", e.value)
                write(sys.stderr, "note: context full\n")
                break
            if chunk is None:
                break
            reply += chunk
            cut = reply.find(MARKER, shown)  # what is shown holds no part of it
            if cut >= 0:
                reply = reply[:cut]
                generation.cancel()  # the model is writing the user's turn: stop it
                break
            safe = len(reply) - marker_tail(reply)
            write(sys.stdout, reply[shown:safe])
            shown = safe
        write(sys.stdout, reply[shown:] + "\n")
        usage = generation.usage()
    report = {"input_tokens": usage.prompt_tokens, "output_tokens": usage.completion_tokens}
    write(sys.stderr, f"usage: {json.dumps(report)}\n")
    return reply


def chat(model: str) -> None:
    graph = call("load-by-name", graphs.load_by_name, model)
    context = call("init-context", graph.init_context)
    for name, value in parameters_from_env():
        call("set-parameter", context.set_parameter, name, value)
    conversation = ""
    while line := sys.stdin.readline():
        line = line.rstrip("\r\n")
        if not line:
            continue
        conversation += f"User: {line}\nAssistant:"
        conversation += turn(context, conversation) + "\n"
    context.__exit__(None, None, None)
    graph.__exit__(None, None, None)


class Run(exports.Run):
    def run(self) -> None:
        if len(sys.argv) != 2:
            write(sys.stderr, "usage: chat_py MODEL  (turns on stdin, one per line)\n")
            raise Err(None)
        try:
            chat(sys.argv[1])
        except Exit:
            raise Err(None) from None


class StdinTurns(exports.StdinTurns):
    def reads_turns(self) -> bool:
        return True
