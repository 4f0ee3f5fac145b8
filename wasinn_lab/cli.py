"""``wasinn-lab``: run guests as ``wasmedge`` would, list models, build guests, compose
components and make preview1 modules components, install the Jupyter kernel spec."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from . import __version__, kernelspec
from .config import parse_assignment
from .errors import ConfigError, GuestTrap, WasiNNLabError

# Each command imports what it uses when it runs: `run` never pays for bench's pandas, nor
# --help for wasmtime and llama.cpp.
if TYPE_CHECKING:
    from .host import Host
    from .limits import Limits

__all__ = ["main"]

TRAP_EXIT_CODE = 128  # distinct from any status a guest passes to proc_exit in practice
INTERRUPTED_EXIT_CODE = 130  # 128 + SIGINT, as shells report it


def _assignment(*, json_value: bool) -> Callable[[str], tuple[str, Any]]:
    """``KEY=VALUE`` for argparse, as the magics read it: VALUE as JSON where it is JSON
    (-p; the host checks it against the options before the guest starts), else text
    (--env, --limit)."""

    def parse(text: str) -> tuple[str, Any]:
        try:
            return parse_assignment(text, json_value=json_value)
        except ConfigError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _directory(text: str) -> tuple[str, str]:
    host_dir, _, guest_dir = text.partition(":")
    if not Path(host_dir).is_dir():
        raise argparse.ArgumentTypeError(f"{host_dir!r} is not a directory")
    return host_dir, guest_dir or host_dir


RUN_DESCRIPTION = """Run a guest as wasmedge would: stdin and stdout wired through, the exit status the guest's
(128 when it traps, 130 on Ctrl-C).

The guests in guests/ take MODEL [PROMPT]: a registered model's name (`default`, the
bundled model, unless --nn-preload names others; `wasinn-lab models` lists them) and the
prompt, read from stdin when it is not given (chat reads one turn per line of stdin)."""

RUN_EXAMPLES = """examples:
  wasinn-lab run stream default "Once upon a time"
  wasinn-lab run -p n-predict=16 -p temp=0 complete default "The capital of France is"
  printf 'Hello!\\nTell me a joke.\\n' | wasinn-lab run chat default
  wasinn-lab run --nn-preload mine:GGML:AUTO:/models/x.gguf stream mine "Hi"

`wasinn-lab options` lists the parameters -p takes."""

BENCH_HELP = "measure guests against llama-cpp-python called directly"

OPTIONS_DESCRIPTION = """The parameters each backend takes. Give them to a run with -p NAME=VALUE (a cell's
%%wasi_nn -p is the same): they are checked before the guest starts and apply to every
context it opens. A guest sends them in its config JSON (n-predict or n_predict). The C
guests in guests/ build that config from environment variables named with _ for -, as
WasmEdge's examples do: --env n_predict=16 (which they write into the JSON unchecked)."""


class _Version(argparse.Action):
    """--version: wasinn-lab's and the versions of what runs the guests, looked up only
    when asked."""

    def __init__(self, option_strings: Sequence[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *_: object) -> None:
        from importlib.metadata import PackageNotFoundError, version

        def installed(package: str) -> str:
            try:
                return f"{package} {version(package)}"
            except PackageNotFoundError:
                return f"{package} not installed"

        parts = ", ".join(installed(package) for package in ("wasmtime", "llama-cpp-python"))
        python = ".".join(map(str, sys.version_info[:3]))
        print(f"wasinn-lab {__version__} ({parts}, Python {python})")
        parser.exit()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wasinn-lab", description="Run and study wasi-nn guests.")
    parser.add_argument("--version", action=_Version, help="show the versions of wasinn-lab, wasmtime and llama.cpp")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def with_preloads(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--nn-preload",
            action="append",
            default=[],
            metavar="NAME:ENC:TARGET:PATH",
            help="register a model, as WasmEdge does (default: the bundled model as 'default')",
        )

    run = commands.add_parser("run", help="run a guest (stdin and stdout wired through)",
                              usage="wasinn-lab run [OPTIONS] GUEST [MODEL [PROMPT]]",
                              description=RUN_DESCRIPTION, epilog=RUN_EXAMPLES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    with_preloads(run)
    run.set_defaults(run_parser=run)
    run.add_argument("-p", "--param", action="append", default=[], type=_assignment(json_value=True), metavar="NAME=VALUE",
                     help="a parameter for every context the guest opens, e.g. -p n-predict=16 (repeatable; "
                          "`wasinn-lab options` lists them)")
    run.add_argument("--dir", action="append", default=[], type=_directory, metavar="HOST[:GUEST]",
                     help="give the guest a directory (none by default)")
    run.add_argument("--env", action="append", default=[], type=_assignment(json_value=False), metavar="KEY=VALUE",
                     help="set an environment variable for the guest")
    run.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                     help="stop the guest after this long (default: no limit on the command line)")
    run.add_argument("--max-memory", type=int, default=None, metavar="MIB", help="linear memory limit (default 2048)")
    run.add_argument("--fuel", type=int, default=None, help="instruction budget (metered; default: none)")
    run.add_argument("--limit", action="append", default=[], type=_assignment(json_value=False), metavar="NAME=VALUE",
                     help="any limit by name: instances, tables, table_elements, load_bytes, ... (repeatable)")
    # Optional here so that a run without one gets a sentence, not argparse's list.
    run.add_argument("guest", nargs="?", metavar="GUEST",
                     help="a .wasm file, a .c/.wat source, or a guest name (stream, complete, chat...)")
    run.add_argument("args", nargs=argparse.REMAINDER, metavar="MODEL [PROMPT]",
                     help="the guest's own arguments: for the guests in guests/, a model name and the prompt")

    # Its arguments are bench's own, read in the bench branch: importing bench costs pandas.
    commands.add_parser("bench", help=BENCH_HELP, add_help=False)

    options = commands.add_parser("options", help="the parameters each backend takes (for run -p, %%%%wasi_nn -p)",
                                  description=OPTIONS_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    options.add_argument("--markdown", action="store_true", help="as Markdown tables (docs/parameters.md's)")

    models = commands.add_parser("models", help="list registered models")
    with_preloads(models)

    guest_commands = commands.add_parser("guests", help="guest sources").add_subparsers(dest="action", required=True)
    build = guest_commands.add_parser("build", help="build every guest in guests/")
    build.add_argument("--out", type=Path, default=None, help="output directory (default: the cache, ~/.cache/wasinn-lab/guests)")

    composition = commands.add_parser(
        "compose", help="compose a component with the providers of what it imports, into one component",
        description="Link COMPONENT's imports to the exports of each PROVIDER in turn (wasm-tools compose): the "
                    "first provider serves the component, the next what is still imported, and so on.")
    composition.add_argument("component", metavar="COMPONENT", help="a component (.wasm) or a guest name (ask, stream_llm...)")
    composition.add_argument("--with", dest="providers", action="extend", nargs="+", required=True, metavar="PROVIDER",
                             help="a provider component or guest name (chat_template, model); repeatable, in order")
    composition.add_argument("-o", "--output", type=Path, default=None,
                             help="the composed component (default: COMPONENT+PROVIDER....wasm beside COMPONENT)")

    component_commands = commands.add_parser("component", help="components").add_subparsers(dest="action", required=True)
    new = component_commands.add_parser(
        "new", help="make a preview1 core module a component",
        description="Make a wasi_ephemeral_nn (WasmEdge) guest a component: its wasi-nn calls through wasinn-lab's "
                    "adapter onto wasi:nn and wasinn:llm, its WASI calls through jco's wasi_snapshot_preview1 adapter.")
    new.add_argument("guest", metavar="GUEST", help="a core module (.wasm, .c, .wat) or a guest name (stream, chat...)")
    new.add_argument("-o", "--output", type=Path, default=None,
                     help="the component (default: GUEST.component.wasm beside the module)")

    kernel_commands = commands.add_parser("kernel", help="the Jupyter kernel spec").add_subparsers(dest="action", required=True)
    install = kernel_commands.add_parser(
        "install",
        help="install the 'Python 3 (wasinn-lab)' kernel spec",
        description="Install kernels/wasinn-lab: ipykernel with the %%wasi_nn magics loaded (--ext=wasinn_lab.notebook).",
    )
    where = install.add_mutually_exclusive_group()
    where.add_argument("--user", action="store_true", help="for this user (Jupyter's user data directory)")
    where.add_argument("--sys-prefix", action="store_true",
                       help="into this Python environment (sys.prefix), for a Jupyter run from it")
    install.add_argument("--name", default=kernelspec.KERNEL_NAME,
                         help=f"the kernel's name (default: {kernelspec.KERNEL_NAME})")
    return parser


def _limits(options: argparse.Namespace) -> Limits:
    from .limits import Limits

    # On the command line, as with wasmedge, a run has no time limit unless asked: Ctrl-C works.
    return Limits(timeout=None).overridden(timeout=options.timeout, fuel=options.fuel,
                                           max_memory_mib=options.max_memory, named=options.limit)


def _host(preloads: Sequence[str]) -> Host:
    from .host import Host

    host = Host(default_model=not preloads)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for spec in preloads:
            host.preload(spec)
    for warning in caught:
        print(f"wasinn-lab: warning: {warning.message}", file=sys.stderr)
    return host


def _warn_of_parameters_in_the_environment(host: Host, env: Sequence[tuple[str, str]]) -> None:
    """``--env n-predict=8`` sets a variable no guest reads (they read ``n_predict``):
    say what was meant rather than run on the defaults."""
    for key, value in env:
        if "-" in key and any(backend.options.lookup(key) for backend in host.registry.backends):
            print(f"wasinn-lab: warning: --env {key}={value} sets an environment variable, which the guests in "
                  f"guests/ read as {key.replace('-', '_')}; for a parameter, checked, use -p {key}={value}",
                  file=sys.stderr)


def _write(stream: TextIO) -> Callable[[bytes], None]:
    buffer = stream.buffer

    def write(data: bytes) -> None:
        buffer.write(data)
        buffer.flush()

    return write


def _print_options(*, markdown: bool) -> None:
    from .host import Host

    if not markdown:
        print("Give a run these with -p NAME=VALUE (wasinn-lab options --help says more).\n")
    with Host(default_model=False) as host:
        for backend in host.registry.backends:
            if not backend.options:
                continue
            print(f"## {backend.encoding.value}\n" if markdown else f"{backend.encoding.value}:")
            if markdown:
                print(backend.options.markdown(), end="\n\n")
                continue
            for row in backend.options.rows():
                print(f"  {row['option']:<18} {row['type']:<5} default {row['default']:<10} {row['what it does']}")


def _compose(options: argparse.Namespace) -> int:
    from . import compose

    composition = compose.compose(options.component, options.providers, options.output)
    for interface, provider in composition.linked:
        print(f"{interface} <- {provider}", file=sys.stderr)
    if composition.unprovided:
        print(f"wasinn-lab: warning: it imports what this host does not provide: {', '.join(composition.unprovided)}",
              file=sys.stderr)
    print(composition.path)
    return 0


def _report(message: str) -> None:
    """What a failed wasi-nn call said: the guest itself saw only a code."""
    print(f"wasinn-lab: {message}", file=sys.stderr, flush=True)


def _bench(arguments: Sequence[str]) -> int:
    from .bench import command as bench

    parser = argparse.ArgumentParser(prog="wasinn-lab bench", description=f"{BENCH_HELP[0].upper()}{BENCH_HELP[1:]}.")
    bench.add_arguments(parser)
    return bench.command(parser.parse_args(arguments))


@contextlib.contextmanager
def _ended_by_a_closed_stdout(command: str) -> Iterator[None]:
    """A run whose reader has gone (``| head``) ends there, silently, as ``cat`` or
    ``wasmedge`` would (SIGPIPE, status 141 in a shell), rather than in a BrokenPipeError
    on the output thread while the guest generates on. Python ignores SIGPIPE so that a
    socket's reset is an exception: a run has none (bench has Dask's), and signal
    dispositions are the main thread's to change."""
    if command != "run" or threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGPIPE, previous)


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    options, unparsed = parser.parse_known_args(argv)
    if options.command != "bench" and unparsed:
        parser.error(f"unrecognized arguments: {' '.join(unparsed)}")
    if options.command == "run" and options.guest is None:
        options.run_parser.error('which guest? e.g. wasinn-lab run stream default "Once upon a time" '
                                 "(wasinn-lab run --help says more)")
    try:
        with _ended_by_a_closed_stdout(options.command):
            return _command(options, unparsed)
    except GuestTrap as trap:
        print(f"wasinn-lab: {trap.args[0]}", file=sys.stderr)
        return TRAP_EXIT_CODE
    except KeyboardInterrupt:  # raised at the guest's next host call, once it has unwound
        print("wasinn-lab: interrupted", file=sys.stderr)
        return INTERRUPTED_EXIT_CODE
    except WasiNNLabError as exc:
        parser.exit(2, f"wasinn-lab: error: {exc}\n")


def _command(options: argparse.Namespace, unparsed: Sequence[str]) -> int:
    if options.command == "guests":
        from . import guests

        for path in guests.build_all(output_dir=options.out):
            print(path)
        return 0
    if options.command == "bench":
        return _bench(unparsed)
    if options.command == "compose":
        return _compose(options)
    if options.command == "component":
        from . import compose

        print(compose.component_new(options.guest, options.output))
        return 0
    if options.command == "kernel":
        destination = kernelspec.install(options.name, user=options.user, sys_prefix=options.sys_prefix)
        print(f"installed kernel spec {destination.name} in {destination}")
        return 0
    if options.command == "options":
        _print_options(markdown=options.markdown)
        return 0
    with _host(options.nn_preload) as host:
        if options.command == "models":
            for spec in host.models():
                where = spec.path if spec.path is not None else "(built in)"
                status = "" if spec.available else "  [missing]"
                print(f"{spec.name}\t{spec.encoding.value}\t{spec.target.value}\t{where}{status}")
            return 0
        _warn_of_parameters_in_the_environment(host, options.env)
        result = host.run(
            options.guest,
            *options.args,
            env=dict(options.env),
            params=dict(options.param),
            # A file, not WASI's inherited stdin, whose tokio reader outlives the run.
            stdin=Path("/dev/stdin"),
            dirs=options.dir,
            on_stdout=_write(sys.stdout),
            on_stderr=_write(sys.stderr),
            on_error=_report,
            limits=_limits(options),
        )
        return result.exit_code


if __name__ == "__main__":
    sys.exit(main())
