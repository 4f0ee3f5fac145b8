"""Fuzzing the host's ABIs on a real host.

``fuzz``: the preview1 ABI, random sequences of the twelve imports with random arguments,
driven through the probe guest (guests/probe.wat).

Arguments mix what a well-behaved guest would pass (live handles, pointers to real data)
with what a hostile one would (stale and foreign handles, pointers and lengths past the
end of memory, huge ranks, invalid UTF-8, broken JSON, wrong-typed configs). A run
checks the host's promises: every call returns an errno (nothing else escapes), no call
hits an unexpected host error, and no session outlives the guest.

``fuzz_wit``: the WIT front-ends (``wasi:nn``, ``wasinn:llm``), through the fuzz_wit
component (guests/components/fuzz_wit.c), which makes the random calls itself and checks
each answer the WIT or guests/wit/README.md documents; see ``fuzz_wit``.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import re
import struct
import time
import traceback
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, cast

from .backends.llama.log import LOGGER as LLAMA_CPP_LOGGER
from .errors import GuestTrap
from .host import Host
from .runtime import ModuleInstance, component
from .runtime.component import RESOURCES_LEFT

__all__ = ["FuzzReport", "WitFuzzReport", "fuzz", "fuzz_wit"]

_PAGE = 65536
_HEAP = 4096
_SIGNATURES = {
    "load": 5, "load_by_name": 3, "load_by_name_with_config": 5, "init_execution_context": 2, "set_input": 3,
    "compute": 1, "get_output": 5, "compute_single": 1, "get_output_single": 5, "fini_single": 1, "unload": 1,
    "finalize_execution_context": 1,
}
# The slow calls are rarer: generating, and unload (the next load of that name reloads weights).
_WEIGHTS = {name: (1 if name in ("compute", "compute_single", "unload") else 4) for name in _SIGNATURES}


@dataclass
class FuzzReport:
    calls: int = 0
    seconds: float = 0.0
    errnos: Counter[int] = field(default_factory=Counter)
    by_call: Counter[str] = field(default_factory=Counter)
    seconds_by_call: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    unexpected: list[str] = field(default_factory=list)  # host errors that became runtime-error, or escapes
    leaked_sessions: int = 0

    @property
    def crashes(self) -> int:
        return len(self.unexpected)


class _Unexpected(logging.Handler):
    """Host errors logged while fuzzing (each an unexpected failure); with ``resources``,
    also how many host resources each component still held when it ended."""

    def __init__(self, unexpected: list[str], resources: list[int] | None = None) -> None:
        super().__init__(logging.DEBUG if resources is not None else logging.ERROR)
        self.unexpected = unexpected
        self.resources = resources

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == RESOURCES_LEFT and self.resources is not None:
            _, left = cast(tuple[str, int], record.args)
            self.resources.append(left)
        elif record.levelno >= logging.ERROR and record.name != LLAMA_CPP_LOGGER:
            # llama.cpp's own log says why a guest's garbage bytes did not load: an answer, not a host bug.
            cause = traceback.format_exception_only(record.exc_info[1])[-1].strip() if record.exc_info else ""
            self.unexpected.append(f"{record.getMessage()}: {cause}" if cause else record.getMessage())


class _Driver:
    def __init__(self, instance: ModuleInstance, rng: random.Random, models: list[str]) -> None:
        self.instance = instance
        self.rng = rng
        self.models = models
        self.size = instance.call("grow", 0) * _PAGE
        self.graphs: list[int] = []
        self.contexts: list[int] = []
        self.next = _HEAP

    def put(self, data: bytes) -> int:
        if self.next + len(data) + 64 > self.size:
            self.next = _HEAP  # reuse the scratch area
        pointer = self.next
        self.instance.write(pointer, data)
        self.next += (len(data) + 7) // 8 * 8
        return pointer

    def u32(self) -> int:
        r = self.rng.random()
        if r < 0.5:
            return self.rng.randrange(0, 8)
        if r < 0.8:
            return self.rng.randrange(0, 1 << 32)
        return self.rng.choice([0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, self.size, self.size - 1])

    def pointer(self) -> int:
        r = self.rng.random()
        if r < 0.7:
            return self.rng.randrange(_HEAP, self.size - 64)  # somewhere real
        return self.rng.choice([0, self.size, self.size - 2, 0xFFFFFFF0, self.rng.randrange(0, 1 << 32)])

    def length(self) -> int:
        return self.rng.choice([0, 1, 7, 64, self.rng.randrange(0, 4096), 0xFFFFFFFF, self.size])

    def handle(self, pool: list[int]) -> int:
        if pool and self.rng.random() < 0.7:
            return self.rng.choice(pool)
        return self.u32()

    def text(self) -> tuple[int, int]:
        choices = [*self.models, "default", "nope", "", "\udcff"]
        name = self.rng.choice(choices).encode("utf-8", "surrogateescape")
        if self.rng.random() < 0.1:
            name = self.rng.randbytes(self.rng.randrange(1, 16))
        if self.rng.random() < 0.1:
            return self.pointer(), self.length()
        return self.put(name), len(name)

    def config(self) -> tuple[int, int]:
        r = self.rng.random()
        if r < 0.15:
            raw = self.rng.choice([b"{", b"[]", b"null", b"\xff\xfe", b'{"n-predict": }'])
        else:
            options: dict[str, Any] = {}
            for key in self.rng.sample(["n-predict", "ctx-size", "temp", "seed", "threads", "batch-size",
                                        "reverse-prompt", "top-k", "embedding", "grammar", "json-schema"], 3):
                options[key] = self.rng.choice([
                    self.rng.randrange(0, 4), -1, -7, 10**9, 0.5, "x", True, None, [1], {"a": 1},
                    "root ::= [a-z]+", '{"type": "string"}',
                ])
            options.setdefault("n-predict", self.rng.randrange(1, 4))  # keep generations short
            if "ctx-size" not in options or self.rng.random() < 0.8:
                options["ctx-size"] = 128  # mostly small contexts: cheap to build
            raw = json.dumps(options).encode()
        return self.put(raw), len(raw)

    def tensor(self) -> int:
        rank = self.rng.choice([0, 1, 1, 2, 4, 40, 0x40000000])
        dims = [self.rng.randrange(0, 5) for _ in range(min(rank, 8))]
        dims_ptr = self.put(struct.pack(f"<{len(dims)}I", *dims)) if dims else self.pointer()
        data = self.rng.choice([b"Once upon a time", self.rng.randbytes(16), b"\xc3\x28", json.dumps({"temp": 0}).encode()])
        data_ptr = self.put(data) if self.rng.random() < 0.85 else self.pointer()
        data_len = len(data) if self.rng.random() < 0.85 else self.length()
        type_code = self.rng.choice([0, 1, 2, 3, 3, 3, 4, 5, 9, 255])
        return self.put(struct.pack("<IIB3xII", dims_ptr, rank, type_code, data_ptr, data_len))

    def out(self) -> int:
        return self.pointer() if self.rng.random() < 0.1 else self.put(b"\0\0\0\0")

    def arguments(self, name: str) -> tuple[int, ...]:
        contexts, graphs = self.contexts, self.graphs
        if name == "load":
            gguf = b"GGUF" + self.rng.randbytes(self.rng.randrange(0, 64))
            builders = self.put(struct.pack("<II", self.put(gguf), len(gguf)))
            return (builders, self.rng.choice([1, 1, 2, self.u32()]), self.rng.choice([5, 6, 0, 99]),
                    self.rng.choice([0, 3, 7]), self.out())
        if name == "load_by_name":
            return (*self.text(), self.out())
        if name == "load_by_name_with_config":
            return (*self.text(), *self.config(), self.out())
        if name == "init_execution_context":
            return (self.handle(graphs), self.out())
        if name == "set_input":
            index = self.rng.choice([0, 0, 1, 2, self.u32()])
            return (self.handle(contexts), index, self.tensor())
        if name in ("get_output", "get_output_single"):
            return (self.handle(contexts), self.rng.choice([0, 1, 5, self.u32()]), self.pointer(),
                    self.rng.choice([0, 1, 16, 4096, self.length()]), self.out())
        if name == "unload":
            return (self.handle(graphs),)
        return (self.handle(contexts),)

    def call(self, name: str, report: FuzzReport) -> None:
        args = self.arguments(name)
        errno = self.instance.call(f"nn_{name}", *args)
        report.errnos[errno] += 1
        report.by_call[name] += 1
        if errno == 0 and name in ("load", "load_by_name", "load_by_name_with_config", "init_execution_context"):
            out = args[-1]
            if 0 <= out <= self.size - 4:
                handle = struct.unpack("<I", self.instance.read(out, 4))[0]
                (self.contexts if name == "init_execution_context" else self.graphs).append(handle)


def fuzz(host: Host, calls: int = 10_000, seed: int = 0) -> FuzzReport:
    """Make ``calls`` random calls through one probe guest; returns what happened."""
    report = FuzzReport()
    rng = random.Random(seed)
    models = [spec.name for spec in host.models()]
    sessions_before = len(host.sessions)
    handler = _Unexpected(report.unexpected)
    logger = logging.getLogger("wasinn_lab")
    logger.addHandler(handler)
    started = time.perf_counter()
    try:
        with host.instantiate("probe") as instance:
            instance.call("grow", 32)  # 2 MiB of room for data
            driver = _Driver(instance, rng, models)
            names, weights = list(_WEIGHTS), list(_WEIGHTS.values())
            for _ in range(calls):
                name = rng.choices(names, weights)[0]
                call_started = time.perf_counter()
                try:
                    driver.call(name, report)
                except Exception as exc:  # anything but an errno is a crash of the host's promise
                    report.unexpected.append(f"{name}: {type(exc).__name__}: {exc}")
                report.seconds_by_call[name] += time.perf_counter() - call_started
                report.calls += 1
    finally:
        logger.removeHandler(handler)
        report.seconds = time.perf_counter() - started
    report.leaked_sessions = len(host.sessions) - sessions_before
    return report


# -- the WIT front-ends ---------------------------------------------------------------------------

FUZZ_GUEST = "fuzz_wit"
_OK = "ok"
# What each call may answer, from the WIT and guests/wit/README.md: wasi:nn's codes as
# abi/wit.py maps the host's errors (busy and backend failures are runtime-error, a prompt
# too long or a full context too-large, a config that is no JSON object invalid-encoding);
# wasinn:llm's per call as its README lists them; preview1's error-kind per class. Never:
# wasi:nn's timeout, security and unknown (nothing here times out or is refused for
# privilege, and unknown would be an error the front-end does not map).
_GENERATING = {"invalid-argument", "too-large", "runtime-error", "busy"}
DOCUMENTED: dict[str, set[str]] = {
    "nn_load_by_name": {"not-found", "runtime-error"},
    "nn_load": {"invalid-argument", "invalid-encoding", "runtime-error", "unsupported-operation", "too-large"},
    "nn_init": {"runtime-error"},
    "nn_compute": {"invalid-argument", "invalid-encoding", "runtime-error", "too-large", "unsupported-operation"},
    "backend_properties": {"not-found"},
    "load_by_name": {"not-found", "runtime-error"},
    "set_property": {"unsupported-operation", "invalid-parameter"},
    "init_context": {"unsupported-operation", "invalid-argument", "runtime-error"},
    "set_parameter": {"invalid-parameter"},
    "compute": _GENERATING | {"invalid-parameter", "unsupported-operation"},
    "generate": _GENERATING | {"invalid-parameter"},
    "next_chunk": _GENERATING,
    "p1_load_by_name": {"not-found", "model-not-found", "invalid-encoding", "invalid-argument", "runtime-error"},
    "p1_load": {"invalid-argument", "invalid-encoding", "runtime-error", "unsupported-operation", "too-large"},
    "p1_configure": {"invalid-encoding", "invalid-argument"},
    "p1_embed": {"unsupported-operation", "invalid-argument", "prompt-too-long", "context-full", "runtime-error"},
}
# The trap each deliberate misuse must end in (wasmtime's canonical ABI refuses it).
TRAPS = {
    "dropped-handle": "unknown handle index",
    "foreign-handle": "handle index [0-9]+ used with the wrong type",
    "double-drop": "unknown handle index",
    "invalid-utf8": "invalid utf-8",
    "string-out-of-bounds": "string pointer/length out of bounds of memory",
    "unknown-enum-case": "discriminant 200 out of range",
    "hostile-realloc": "realloc return: beyond end of memory",
}
_TALLY = re.compile(r"^fuzz: tally (\S+) (\S+) (\d+)$", re.M)
_WRONG = re.compile(r"^fuzz: wrong (.*)$", re.M)
_TRAP = re.compile(r"^fuzz: trap (\S+)$", re.M)


@dataclass
class WitFuzzReport:
    calls: int = 0
    runs: int = 0
    seconds: float = 0.0
    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (call, "ok" or "iface:code") -> n
    traps: Counter[str] = field(default_factory=Counter)  # deliberate traps, by kind
    wrong: list[str] = field(default_factory=list)  # answers that are not the documented ones
    unexpected: list[str] = field(default_factory=list)  # host errors, unplanned traps and failed runs
    leaked_sessions: int = 0
    resources_left: int = 0  # host resources still held by guests that had dropped everything
    freed_after_traps: int = 0  # what guests that trapped still held, which the host freed

    @property
    def failures(self) -> list[str]:
        return [*self.wrong, *self.unexpected]


def _undocumented(outcomes: Counter[tuple[str, str]]) -> list[str]:
    return [f"{call} answered {outcome} ({n}x), which is not documented for it"
            for (call, outcome), n in sorted(outcomes.items())
            if outcome != _OK and outcome.partition(":")[2] not in DOCUMENTED.get(call, set())]


def fuzz_wit(host: Host, calls: int = 10_000, seed: int = 0, *, model: str = "default", run_calls: int = 400,
             trap_share: float = 0.25, text_share: int = 40) -> WitFuzzReport:
    """Make about ``calls`` random wasi:nn and wasinn:llm calls through runs of the fuzz_wit
    guest (``run_calls`` on average each), ``model`` its text model, ``text_share`` percent of
    them on contexts and generations (the calls that run the model); about ``trap_share``
    of the runs end in a deliberate trap. Checked for every run: the guest's own checks of each
    answer, each error code against ``DOCUMENTED``, a deliberate trap against ``TRAPS`` and
    any other trap or failure, host errors logged, sessions left open, and host resources
    left by a guest that dropped everything."""
    report = WitFuzzReport()
    rng = random.Random(seed)
    # Held through the run, so that the weights stay loaded when a guest unloads the model
    # (the next load would read them again): the calls are under test, not the loading.
    holder = host.open_session(model)
    holder.reload()  # (a context takes its weights when it is first used)
    sessions_before = len(host.sessions) - 1
    resources: list[int] = []
    handler = _Unexpected(report.unexpected, resources)
    logger, component_log = logging.getLogger("wasinn_lab"), logging.getLogger(component.__name__)
    level = component_log.level
    logger.addHandler(handler)
    component_log.setLevel(logging.DEBUG)  # the RESOURCES_LEFT records
    started = time.perf_counter()
    try:
        kinds = itertools.cycle(TRAPS)  # each kind in turn
        while report.calls < calls:
            n = min(calls - report.calls, rng.randrange(run_calls // 2, run_calls * 3 // 2 + 1))
            trap = next(kinds) if rng.random() < trap_share else "none"
            run_seed = rng.getrandbits(63)
            args = (str(run_seed), str(n), model, trap, str(text_share))
            _fuzz_run(host, report, resources, f"`{FUZZ_GUEST} {' '.join(args)}`", *args)
            report.calls += n
            report.runs += 1
            if holder.closed:  # the host's idle expiry (5 minutes) took it: the weights go, nothing else
                holder = host.open_session(model)
                holder.reload()
            leaked = len(host.sessions) - 1 - sessions_before
            if leaked:
                report.leaked_sessions += leaked
                report.unexpected.append(f"seed {run_seed}: {leaked} sessions left open")
                break
    finally:
        logger.removeHandler(handler)
        component_log.setLevel(level)
        host.sessions.discard(holder)
        report.seconds = time.perf_counter() - started
    report.wrong += _undocumented(report.outcomes)
    return report


def _fuzz_run(host: Host, report: WitFuzzReport, resources: list[int], name: str, *args: str) -> None:
    planned = args[3] != "none"
    del resources[:]
    try:
        result = host.run(FUZZ_GUEST, *args)
        stderr = result.stderr
        if result.exit_code != 0:
            report.unexpected.append(f"{name}: exit status {result.exit_code}: {stderr[-500:]}")
        if resources and not planned:
            report.resources_left += sum(resources)
            report.unexpected.append(f"{name}: the host still held {sum(resources)} resources the guest had dropped")
    except GuestTrap as exc:
        stderr = exc.stderr
        kind = _TRAP.findall(stderr)
        if not kind or not planned:
            report.unexpected.append(f"{name}: trapped: {exc.trap}")
        elif not re.search(TRAPS[kind[0]], exc.trap):
            report.unexpected.append(f"{name}: the {kind[0]} trap said: {exc.trap}")
        else:
            report.traps[kind[0]] += 1
            report.freed_after_traps += sum(resources)
    for call, outcome, n in _TALLY.findall(stderr):
        report.outcomes[call, outcome] += int(n)
    report.wrong += [f"{name}: {line}" for line in _WRONG.findall(stderr)]
