"""Fuzzing the preview1 ABI: random sequences of the twelve imports with random arguments,
driven through the probe guest (guests/probe.wat) on a real host.

Arguments mix what a well-behaved guest would pass (live handles, pointers to real data)
with what a hostile one would (stale and foreign handles, pointers and lengths past the
end of memory, huge ranks, invalid UTF-8, broken JSON, wrong-typed configs). A run
checks the host's promises: every call returns an errno (nothing else escapes), no call
hits an unexpected host error, and no session outlives the guest.
"""

from __future__ import annotations

import json
import logging
import random
import struct
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from .host import Host
from .runtime import ModuleInstance

__all__ = ["FuzzReport", "fuzz"]

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
    def __init__(self, report: FuzzReport) -> None:
        super().__init__(logging.ERROR)
        self.report = report

    def emit(self, record: logging.LogRecord) -> None:
        self.report.unexpected.append(record.getMessage())


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
    handler = _Unexpected(report)
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
