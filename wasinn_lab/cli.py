"""``wasinn-lab``: run guests as ``wasmedge`` would, list models, build guests."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from . import guests
from .errors import GuestTrap, WasiNNLabError
from .host import Host

__all__ = ["main"]

TRAP_EXIT_CODE = 128  # distinct from any status a guest passes to proc_exit in practice


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _directory(text: str) -> tuple[str, str]:
    host_dir, _, guest_dir = text.partition(":")
    if not Path(host_dir).is_dir():
        raise argparse.ArgumentTypeError(f"{host_dir!r} is not a directory")
    return host_dir, guest_dir or host_dir


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasinn-lab", description="Run and study wasi-nn guests.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_preloads(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--nn-preload",
            action="append",
            default=[],
            metavar="NAME:ENC:TARGET:PATH",
            help="register a model, as WasmEdge does (default: the bundled model as 'default')",
        )

    run = commands.add_parser("run", help="run a guest (stdin and stdout wired through)")
    with_preloads(run)
    run.add_argument("--dir", action="append", default=[], type=_directory, metavar="HOST[:GUEST]",
                     help="give the guest a directory (none by default)")
    run.add_argument("--env", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
                     help="set an environment variable for the guest")
    run.add_argument("guest", metavar="GUEST", help="a .wasm file, a .c/.wat source, or a guest name (stream, chat...)")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="ARGS", help="the guest's own arguments")

    models = commands.add_parser("models", help="list registered models")
    with_preloads(models)

    guest_commands = commands.add_parser("guests", help="guest sources").add_subparsers(dest="action", required=True)
    build = guest_commands.add_parser("build", help="build every guest in guests/")
    build.add_argument("--out", type=Path, default=None, help="output directory (default: guests/build)")
    return parser


def _host(preloads: Sequence[str]) -> Host:
    host = Host(default_model=not preloads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for spec in preloads:
            host.preload(spec)
    for warning in caught:
        print(f"wasinn-lab: warning: {warning.message}", file=sys.stderr)
    return host


def _write(stream: TextIO) -> Callable[[bytes], None]:
    buffer = stream.buffer

    def write(data: bytes) -> None:
        buffer.write(data)
        buffer.flush()

    return write


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    try:
        if options.command == "guests":
            for path in guests.build_all(output_dir=options.out):
                print(path)
            return 0
        host = _host(options.nn_preload)
        if options.command == "models":
            for spec in host.models():
                where = spec.path if spec.path is not None else "(built in)"
                status = "" if spec.available else "  [missing]"
                print(f"{spec.name}\t{spec.encoding.value}\t{spec.target.value}\t{where}{status}")
            return 0
        result = host.run(
            options.guest,
            *options.args,
            env=dict(options.env),
            # A file, not WASI's inherited stdin, whose tokio reader outlives the run.
            stdin=Path("/dev/stdin"),
            dirs=options.dir,
            on_stdout=_write(sys.stdout),
            on_stderr=_write(sys.stderr),
        )
        return result.exit_code
    except GuestTrap as trap:
        print(f"wasinn-lab: {trap.args[0]}", file=sys.stderr)
        return TRAP_EXIT_CODE
    except WasiNNLabError as exc:
        parser.exit(2, f"wasinn-lab: error: {exc}\n")


if __name__ == "__main__":
    sys.exit(main())
