"""Composition and adapters: components composed with the shipped providers
(guests/providers/), and preview1 guests made components with the wasi_ephemeral_nn
adapter (wasinn_lab/adapters/), their output compared with the modules' own."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from conftest import GREEDY

from wasinn_lab import ConfigError, GuestLimitError, GuestLoadError, Host, Limits, cli, guests
from wasinn_lab import compose as composition
from wasinn_lab.guests import build, build_dir, resolve
from wasinn_lab.models import default_model_path
from wasinn_lab.runtime import kind_of

SEEDED = {"n_predict": "16", "seed": "42", "temp": "0.8"}
QUESTIONS = "What is the capital of France?\nAnd of Italy?\n"


def usages(stderr: str) -> list[dict[str, int]]:
    return [{key: int(value) for key, value in re.findall(r'"(\w+)": (\d+)', line)}
            for line in re.findall(r"^usage: (\{.*\})$", stderr, re.M)]


@pytest.fixture(scope="module")
def adapted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every preview1 guest of guests/ made a component (probe.wat apart: see its test)."""
    folder = tmp_path_factory.mktemp("adapted")
    return {name: composition.component_new(name, folder / f"{name}.wasm")
            for name in ("complete", "stream", "chat", "echo", "embed", "unload")}


# -- the adapter: preview1 guests made components --------------------------------------------


def test_component_new_makes_a_preview1_module_a_command_component(adapted: dict[str, Path]) -> None:
    wasm = adapted["stream"].read_bytes()
    assert kind_of(wasm) == "component"
    imports = composition.component_imports(wasm)
    # wasi_ephemeral_nn became wasi:nn and wasinn:llm (with the adapter's own interface) ...
    assert {"wasi:nn/graph@0.2.0-rc-2024-10-28", "wasinn:llm/prompt@0.1.1", "wasinn:llm/preview1@0.1.1"} <= set(imports)
    # ... and wasi_snapshot_preview1 WASI 0.2; nothing the lab's host lacks
    assert composition.unprovided(imports) == []
    assert composition.component_exports(wasm) == ["wasi:cli/run@0.2.12"]


@pytest.mark.parametrize(
    ("guest", "args", "stdin"),
    [
        ("stream", ("default", "Once upon a time"), None),
        ("complete", ("default", "Once upon a time"), None),
        ("chat", ("default",), "Hello!\nTell me a joke.\n"),
        ("embed", ("default", "Hello world"), None),
        ("echo", ("echo",), None),
        ("unload", ("default", "Hi"), None),
    ],
)
def test_every_guest_made_a_component_gives_what_the_module_gives(
    host: Host, adapted: dict[str, Path], guest: str, args: tuple[str, ...], stdin: str | None
) -> None:
    module = host.run(guest, *args, env=SEEDED, stdin=stdin)
    component = host.run(str(adapted[guest]), *args, env=SEEDED, stdin=stdin)
    assert module.exit_code == component.exit_code == 0, component.stderr
    assert module.stdout.strip()
    assert component.stdout == module.stdout  # the text, the embedding JSON, echo's 30 cases
    assert component.stderr == module.stderr  # the usage lines: the same JSON, byte for byte


def test_the_adapted_stream_guest_streams_token_by_token(host: Host, adapted: dict[str, Path]) -> None:
    pieces: list[bytes] = []
    result = host.run(str(adapted["stream"]), "default", "Once upon a time", env={"n_predict": "12", **_greedy()},
                      on_stdout=pieces.append, session="adapted-stream")
    try:
        assert result.exit_code == 0
        assert len(pieces) >= 6  # flushed a token at a time, as they came
        generation = host.session("adapted-stream").generations[-1]
        assert generation.output_tokens == 12 and generation.host_calls["next-chunk"][0] >= 12
    finally:
        host.sessions.close("adapted-stream")


def _greedy() -> dict[str, str]:
    return {key: str(value) for key, value in GREEDY.items()}


# Each call the way a guest can get it wrong, and a few it gets right: one line per case,
# `NAME: errno N [written W] [text]`, compared line by line between the module and the
# component made of it. argv[1]: a text model, argv[2]: a registered model whose file is missing.
ERRORS_GUEST = r"""
#include "wasi_nn.h"

static void line(const char *name, int err) { printf("%s: errno %d\n", name, err); }

static uint32_t model(const char *name)
{
    graph g = 0;
    nn_check(wasi_nn_load_by_name(name, (uint32_t)strlen(name), &g), "load_by_name");
    return g;
}

static int load_with(const char *name, const char *cfg, graph *g)
{
    return wasi_nn_load_by_name_with_config(name, (uint32_t)strlen(name), cfg, (uint32_t)strlen(cfg), g);
}

static graph_execution_context context_of(graph g)
{
    graph_execution_context c = 0;
    nn_check(wasi_nn_init_execution_context(g, &c), "init_execution_context");
    return c;
}

static int set_text(graph_execution_context c, uint32_t index, const char *text)
{
    uint32_t dims[1] = {1};
    nn_tensor t = {dims, 1, NN_TENSOR_U8, {0}, text, (uint32_t)strlen(text)};
    return wasi_nn_set_input(c, index, &t);
}

/* Tensors for echo: dims [len], u8. */
static int set_bytes(graph_execution_context c, uint32_t index, const char *text)
{
    uint32_t dims[1] = {(uint32_t)strlen(text)};
    nn_tensor t = {dims, 1, NN_TENSOR_U8, {0}, text, (uint32_t)strlen(text)};
    return wasi_nn_set_input(c, index, &t);
}

static uint32_t written;

static void output_to(const char *name, graph_execution_context c, uint32_t index, uint32_t max, int single,
                      uint32_t *to)
{
    static char buf[65536];
    written = 12345;
    int err = single ? wasi_nn_get_output_single(c, index, buf, max, to)
                     : wasi_nn_get_output(c, index, buf, max, to);
    printf("%s: errno %d written %u", name, err, written);
    if (err == 0)
        printf(" [%.*s]", (int)written, buf);
    printf("\n");
}

static void output(const char *name, graph_execution_context c, uint32_t index, uint32_t max, int single)
{
    output_to(name, c, index, max, single, &written);
}

int main(int argc, char **argv)
{
    const char *text = argc > 1 ? argv[1] : "default", *missing = argc > 2 ? argv[2] : "missing";
    graph g = 77, e;
    graph_execution_context c, ce;
    const char bad_utf8[] = "def\xff";
    const char *cfg;

    line("load_by_name unknown", wasi_nn_load_by_name("no-such-model", 13, &g));
    line("load_by_name file missing", wasi_nn_load_by_name(missing, (uint32_t)strlen(missing), &g));
    line("load_by_name bad utf-8", wasi_nn_load_by_name(bad_utf8, 4, &g));
    line("load_by_name name out of memory", wasi_nn_load_by_name((const char *)0xfffffff0, 64, &g));
    line("load_by_name out pointer out of memory", wasi_nn_load_by_name(text, (uint32_t)strlen(text), (graph *)0xfffffffe));
    cfg = "{\"temp\": ";
    line("config malformed", load_with(text, cfg, &g));
    cfg = "[1, 2]";
    line("config not an object", load_with(text, cfg, &g));
    cfg = "{\"temp\": \"hot\"}";
    line("config wrong type", load_with(text, cfg, &g));
    cfg = "{\"stream-stdout\": 3}";
    line("config stream-stdout not a bool", load_with(text, cfg, &g));
    cfg = "{\"no-such-key\": 1, \"n-predict\": 4, \"temp\": 0}";
    line("config unknown key", load_with(text, cfg, &g));
    cfg = "{\"ctx-size\": 100000000}";
    graph big = 0;
    line("config ctx-size over the model's: load", load_with(text, cfg, &big));
    line("config ctx-size over the model's: init", wasi_nn_init_execution_context(big, &c));

    line("init unknown graph", wasi_nn_init_execution_context(99999, &c));
    line("init out pointer out of memory", wasi_nn_init_execution_context(g, (graph_execution_context *)0xfffffffe));
    line("set_input unknown context", set_text(99999, 0, "x"));
    line("compute unknown context", wasi_nn_compute(99999));
    line("compute_single unknown context", wasi_nn_compute_single(99999));
    line("fini_single unknown context", wasi_nn_fini_single(99999));
    line("finalize unknown context", wasi_nn_finalize_execution_context(99999));
    line("unload unknown graph", wasi_nn_unload(99999));
    output("get_output unknown context", 99999, 0, 16, 0);

    c = context_of(g);
    line("compute before any prompt", wasi_nn_compute(c));
    line("compute_single before any prompt", wasi_nn_compute_single(c));
    {
        nn_tensor t = {(const uint32_t *)0xfffffff0, 1, NN_TENSOR_U8, {0}, "x", 1};
        line("set_input dims out of memory", wasi_nn_set_input(c, 0, &t));
        uint32_t dims[33] = {1};
        nn_tensor deep = {dims, 33, NN_TENSOR_U8, {0}, "x", 1};
        line("set_input rank 33", wasi_nn_set_input(c, 0, &deep));
        nn_tensor odd = {dims, 1, 9, {0}, "x", 1};
        line("set_input type 9", wasi_nn_set_input(c, 0, &odd));
        line("set_input tensor out of memory", wasi_nn_set_input(c, 0, (const nn_tensor *)0xfffffff0));
        nn_tensor bad = {dims, 1, NN_TENSOR_U8, {0}, bad_utf8, 4};
        line("set_input prompt not utf-8", wasi_nn_set_input(c, 0, &bad));
    }
    line("set_input config malformed", set_text(c, 1, "{oops"));
    line("set_input config wrong type", set_text(c, 1, "{\"top-k\": \"many\"}"));
    line("set_input prompt", set_text(c, 0, "The capital of France is"));
    output("usage before compute", c, 1, 4096, 0);
    output("usage before compute, buffer too small", c, 1, 10, 0);
    output("text before compute", c, 0, 4096, 0);
    line("set_input config after the prompt", set_text(c, 1, "{\"n-predict\": 3}"));
    line("compute", wasi_nn_compute(c));
    output("text", c, 0, 4096, 0);
    output("text, buffer too small", c, 0, 2, 0);
    output("text, buffer out of memory", c, 0, 0xffffff00, 0);
    output_to("text, written out of memory", c, 0, 4096, 0, (uint32_t *)0xfffffffe);
    output("usage", c, 1, 4096, 0);
    line("compute again", wasi_nn_compute(c));
    output("text again", c, 0, 4096, 0);
    int n = 0, err;
    while ((err = wasi_nn_compute_single(c)) == 0) {
        output("single", c, 0, 4096, 1);
        n++;
    }
    printf("compute_single ended after %d with errno %d\n", n, err);
    output("single after the end", c, 0, 4096, 1);
    output("single usage", c, 1, 4096, 1);
    output("single usage, buffer too small", c, 1, 5, 1);
    line("compute_single after the end starts again", wasi_nn_compute_single(c));
    line("fini_single", wasi_nn_fini_single(c));
    output("single after fini", c, 0, 4096, 1);
    line("fini_single again", wasi_nn_fini_single(c));
    line("finalize", wasi_nn_finalize_execution_context(c));
    line("finalize again", wasi_nn_finalize_execution_context(c));
    line("compute after finalize", wasi_nn_compute(c));

    /* sizes the context cannot hold */
    cfg = "{\"ctx-size\": 8, \"n-predict\": 50, \"temp\": 0}";
    graph small = 0;
    line("small context: load", load_with(text, cfg, &small));
    c = context_of(small);
    line("prompt too long: set_input", set_text(c, 0, "one two three four five six seven eight nine ten eleven twelve"));
    line("prompt too long: compute", wasi_nn_compute(c));
    line("prompt too long: compute_single", wasi_nn_compute_single(c));
    line("context full: set_input", set_text(c, 0, "Once"));
    line("context full: compute", wasi_nn_compute(c));
    output("context full: text kept", c, 0, 4096, 0);
    line("context full: set_input again", set_text(c, 0, "Once"));
    n = 0;
    while ((err = wasi_nn_compute_single(c)) == 0)
        n++;
    printf("context full: compute_single ended after %d with errno %d\n", n, err);
    line("finalize", wasi_nn_finalize_execution_context(c));

    /* the echo backend: tensors by index */
    e = model("echo");
    ce = context_of(e);
    {
        uint32_t dims[2] = {2, 2};
        float data[4] = {1, 2, 3, 4};
        nn_tensor t = {dims, 2, NN_TENSOR_F32, {0}, data, sizeof data};
        nn_tensor short_data = {dims, 2, NN_TENSOR_F32, {0}, data, 15};
        line("echo set_input data shorter than dims", wasi_nn_set_input(ce, 0, &short_data));
        line("echo set_input 0", wasi_nn_set_input(ce, 0, &t));
        line("echo set_input 1", set_bytes(ce, 1, "config?"));
        line("echo set_input 7", set_bytes(ce, 7, "seven"));
        output("echo output before compute", ce, 0, 64, 0);
        line("echo compute", wasi_nn_compute(ce));
        output("echo output 1", ce, 1, 64, 0);
        output("echo output 7", ce, 7, 64, 0);
        output("echo output 0, buffer one short", ce, 0, 15, 0);
        output("echo output 9 (none)", ce, 9, 64, 0);
        line("echo compute again", wasi_nn_compute(ce));
        output("echo output 7 again", ce, 7, 64, 0);
        line("echo compute_single", wasi_nn_compute_single(ce));
        output("echo get_output_single", ce, 0, 64, 1);
        line("echo fini_single", wasi_nn_fini_single(ce));
        line("echo finalize", wasi_nn_finalize_execution_context(ce));
    }

    /* load from bytes */
    {
        nn_builder builders[1] = {{(const uint8_t *)"not a model", 11}};
        line("load bad encoding", wasi_nn_load(builders, 1, 9, NN_TARGET_CPU, &g));
        line("load bad target", wasi_nn_load(builders, 1, NN_ENCODING_GGML, 7, &g));
        line("load 65 builders", wasi_nn_load(builders, 65, NN_ENCODING_GGML, NN_TARGET_CPU, &g));
        line("load builders out of memory", wasi_nn_load((const nn_builder *)0xfffffff0, 1, NN_ENCODING_GGML, NN_TARGET_CPU, &g));
        nn_builder far[1] = {{(const uint8_t *)0xfffffff0, 64}};
        line("load builder bytes out of memory", wasi_nn_load(far, 1, NN_ENCODING_GGML, NN_TARGET_CPU, &g));
        line("load autodetect, not GGUF", wasi_nn_load(builders, 1, NN_ENCODING_AUTODETECT, NN_TARGET_AUTO, &g));
    }

    /* WasmEdge's stream-stdout: each token printed as compute makes it */
    cfg = "{\"stream-stdout\": true, \"n-predict\": 5, \"temp\": 0}";
    line("stream-stdout: load", load_with(text, cfg, &g));
    c = context_of(g);
    set_text(c, 0, "Roses are red,");
    fputs("stream-stdout: [", stdout);
    fflush(stdout);
    err = wasi_nn_compute(c);
    printf("] errno %d\n", err);
    line("stream-stdout off", set_text(c, 1, "{\"stream_stdout\": false}"));
    set_text(c, 0, "Violets are");
    fputs("stream-stdout off: [", stdout);
    fflush(stdout);
    err = wasi_nn_compute(c);
    printf("] errno %d\n", err);
    output("stream-stdout off: text", c, 0, 4096, 0);
    wasi_nn_finalize_execution_context(c);

    /* unload */
    g = model(text);
    c = context_of(g);
    line("unload", wasi_nn_unload(g));
    line("unload again", wasi_nn_unload(g));
    line("init after unload", wasi_nn_init_execution_context(g, &c));
    line("finalize a context of an unloaded graph", wasi_nn_finalize_execution_context(c));
    return 0;
}
"""


@pytest.fixture(scope="module")
def errors_guest(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("errors")
    source = folder / "nn_errors.c"
    source.write_text(ERRORS_GUEST)
    module = build(source)
    return module, composition.component_new(module, folder / "nn_errors.component.wasm")


def test_the_adapter_gives_every_errno_the_module_path_gives(host: Host, errors_guest: tuple[Path, Path],
                                                            tmp_path: Path) -> None:
    with pytest.warns(UserWarning, match="does not exist"):
        host.register("missing", tmp_path / "missing.gguf")
    try:
        module, component = (host.run(str(wasm), "default", "missing") for wasm in errors_guest)
    finally:
        host.registry.unregister("missing")
    assert module.exit_code == component.exit_code == 0, component.stderr
    lines = dict(re.findall(r"^(.*?): (errno .*)$", module.stdout, re.M))
    adapted = dict(re.findall(r"^(.*?): (errno .*)$", component.stdout, re.M))
    # The one difference (README, "What it cannot do"): wasi:nn's compute answers for its
    # own inputs, and the adapter sends those set since the last compute: none here.
    assert lines.pop("echo output 7 again") == "errno 0 written 5 [seven]"
    assert adapted.pop("echo output 7 again") == "errno 1 written 12345"
    assert adapted == lines and len(component.stdout.splitlines()) == len(module.stdout.splitlines())
    assert lines["load_by_name unknown"] == "errno 8"
    assert lines["load_by_name file missing"] == "errno 103"
    assert lines["load_by_name bad utf-8"] == lines["init unknown graph"] == lines["compute unknown context"] == "errno 1"
    assert lines["config malformed"] == lines["config not an object"] == "errno 2"
    assert lines["config wrong type"] == lines["config stream-stdout not a bool"] == "errno 1"
    assert lines["config ctx-size over the model's: init"] == "errno 1"
    assert re.fullmatch(r"errno 7 written 1\d\d", lines["usage before compute, buffer too small"])  # the size needed
    assert lines["text, buffer too small"] == "errno 7 written 15"
    assert re.fullmatch(r'errno 0 written \d+ \[\{"input_tokens": \d+, "output_tokens": 0, "llama_build_number": 0, '
                        r'"llama_commit": "[^"]+"\}\]', lines["usage before compute"])
    assert "compute_single ended after 3 with errno 100" in module.stdout
    assert lines["prompt too long: compute"] == lines["prompt too long: compute_single"] == "errno 102"
    assert lines["context full: compute"] == "errno 101" and "with errno 101" in module.stdout
    assert lines["echo compute_single"] == "errno 6" and lines["echo output 0, buffer one short"] == "errno 7 written 16"
    assert lines["load bad encoding"] == lines["load autodetect, not GGUF"] == "errno 2"
    assert lines["unload"] == "errno 0" and lines["unload again"] == "errno 1"
    assert re.search(r"^stream-stdout: \[.+\] errno 0$", module.stdout, re.M)  # tokens printed as they came


def test_probe_wat_made_a_component_keeps_only_its_command(tmp_path: Path) -> None:
    """probe.wat is driven export by export (host.instantiate, for the ABI tests): a
    component exports only what its world says, so the probe made one keeps wasi:cli/run
    (its empty _start) and loses the nn_* functions. The errno test above makes its calls
    from a command instead."""
    wasm = composition.component_new("probe", tmp_path / "probe.wasm").read_bytes()
    assert composition.component_exports(wasm) == ["wasi:cli/run@0.2.12"]


def test_component_new_says_what_it_cannot_adapt(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a component already"):
        composition.component_new("stream_llm", tmp_path / "x.wasm")
    odd = tmp_path / "odd.wat"
    odd.write_text('(module (import "wasi_ephemeral_nn" "load_by_nickname" (func (param i32) (result i32)))'
                   ' (memory (export "memory") 1) (func (export "_start")))')
    with pytest.raises(ConfigError, match="functions no adapter provides: load_by_nickname"):
        composition.component_new(odd, tmp_path / "odd.wasm")
    reactor = tmp_path / "reactor.wat"
    reactor.write_text('(module (memory (export "memory") 1) (func (export "_initialize")))')
    with pytest.raises(ConfigError, match="exports no _start"):
        composition.component_new(reactor, tmp_path / "reactor.wasm")


# -- composition ---------------------------------------------------------------------------------


def test_the_chat_template_cuts_a_base_models_answer_at_the_turn_marker(host: Host, tmp_path: Path) -> None:
    composed = composition.compose("ask", ["chat_template"], tmp_path / "ask+chat.wasm")
    assert [interface for interface, _ in composed.linked] == ["wasinn:llm/prompt@0.1.1", "wasinn:llm/graphs@0.1.1"]
    assert composed.unprovided == [] and not any("-provided" in name for name in composed.imports)
    env = {"n_predict": "64", **_greedy()}
    raw = host.run("ask", "default", stdin=QUESTIONS, env=env)
    chat = host.run(str(composed.path), "default", stdin=QUESTIONS, env=env)
    assert raw.exit_code == chat.exit_code == 0, chat.stderr
    first, second = usages(chat.stderr)
    assert first["output_tokens"] < 64 and second["output_tokens"] < 64  # each answer stopped at the marker
    assert all(usage["output_tokens"] == 64 for usage in usages(raw.stderr))  # the base model alone runs on
    assert "Paris" in chat.stdout and "User:" not in chat.stdout
    # One conversation: the second turn's prompt is the first turn, its answer, and the question.
    assert second["input_tokens"] > first["input_tokens"] + first["output_tokens"]


def test_a_guest_that_reads_tokens_is_not_composed_with_a_provider_of_prompt(tmp_path: Path) -> None:
    """next-token takes the host's generation: a provider's generations are its own (before
    this check, wasm-tools compose panicked)."""
    with pytest.raises(ConfigError, match=r"chat_template.*wasinn:llm/tokens@.*pull a provider's answers with next-chunk"):
        composition.compose("tokens_llm", ["chat_template"], tmp_path / "tokens+chat.wasm")


def test_the_model_provider_picks_the_model_and_its_defaults(host: Host, tmp_path: Path) -> None:
    composed = composition.compose("ask", ["model"], tmp_path / "ask+model.wasm")
    assert composed.linked == [("wasinn:llm/graphs@0.1.1", "model.wasm")]
    result = host.run(str(composed.path), "any-name-at-all", "Once upon a time", env={"seed": "1"})
    assert result.exit_code == 0, result.stderr
    assert usages(result.stderr)[0]["output_tokens"] == 48  # the provider's n-predict
    again = host.run(str(composed.path), "any-name-at-all", "Once upon a time", env={"n_predict": "5", "seed": "1"})
    assert usages(again.stderr)[0]["output_tokens"] == 5  # the guest's own parameters still win


def test_providers_stack_in_order(host: Host, tmp_path: Path) -> None:
    composed = composition.compose("ask", ["chat_template", "model"], tmp_path / "ask+chat+model.wasm")
    assert [provider for _, provider in composed.linked] == ["chat_template.wasm", "chat_template.wasm", "model.wasm"]
    result = host.run(str(composed.path), "no-such-model", stdin=QUESTIONS, env={"seed": "3"})
    assert result.exit_code == 0, result.stderr
    assert "User:" not in result.stdout and all(usage["output_tokens"] < 48 for usage in usages(result.stderr))


def test_an_adapted_preview1_guest_runs_on_the_hosts_text_interface_only(adapted: dict[str, Path], tmp_path: Path) -> None:
    """Its adapter imports wasinn:llm/preview1, whose graphs and contexts are the host's: a
    provider of graphs or prompt cannot stand between it and the host."""
    for provider in ("chat_template", "model"):
        with pytest.raises(ConfigError, match=re.escape("wasinn:llm/preview1@0.1.1 from the host")):
            composition.compose(adapted["stream"], [provider], tmp_path / "x.wasm")


def test_a_provider_that_provides_nothing_asked_for_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(
            "provider echo_nn.wasm exports nothing that is imported here: it exports wasi:cli/run@0.2.12; what is "
            "composed so far imports wasinn:llm/types@0.1.1, wasinn:llm/prompt@0.1.1, wasinn:llm/graphs@0.1.1 (and WASI)")):
        composition.compose("ask", ["echo_nn"], tmp_path / "x.wasm")
    with pytest.raises(ConfigError, match="is a core module, not a component: make it one first"):
        composition.compose("ask", ["stream"], tmp_path / "x.wasm")


def test_a_composition_that_imports_what_the_host_lacks_is_refused_naming_it(host: Host, tmp_path: Path) -> None:
    # A provider built against a version of an interface the host does not serve.
    stale = tmp_path / "model-0.2.wasm"
    stale.write_bytes(composition._renamed(resolve("model").read_bytes(), composition._COMPONENT_IMPORTS,
                                           {"wasinn:llm/types@0.1.1": "wasinn:llm/types@0.2.0"}))
    composed = composition.compose("ask", [stale], tmp_path / "ask+stale.wasm")
    assert composed.unprovided == ["wasinn:llm/types@0.2.0"]
    with pytest.raises(GuestLoadError, match=re.escape("imports what this host does not provide: wasinn:llm/types@0.2.0")):
        host.run(str(composed.path), "default", "Hi")


def test_the_command_line_composes_and_adapts(host: Host, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["component", "new", "stream", "-o", str(tmp_path / "stream.wasm")]) == 0
    assert cli.main(["compose", "ask", "--with", "chat_template", "model", "-o", str(tmp_path / "out.wasm")]) == 0
    out, err = capsys.readouterr()
    assert out.split() == [str(tmp_path / "stream.wasm"), str(tmp_path / "out.wasm")]
    assert "wasinn:llm/graphs@0.1.1 <- model.wasm" in err
    for wasm in ("stream.wasm", "out.wasm"):
        result = host.run(str(tmp_path / wasm), "default", "Name a colour.", env=_greedy())
        assert result.exit_code == 0 and result.stdout.strip(), result.stderr
    with pytest.raises(SystemExit) as refused:
        cli.main(["compose", "ask", "--with", "echo_nn", "-o", str(tmp_path / "no.wasm")])
    assert refused.value.code == 2
    assert "echo_nn.wasm exports nothing that is imported here" in capsys.readouterr().err


def test_providers_build_with_the_other_guests() -> None:
    built = {path.stem for path in guests.build_all()}
    assert {"chat_template", "model", "ask"} <= built
    wasm_tools = guests._wasm_tools()
    for name in ("chat_template", "model"):
        wasm = build_dir() / f"{name}.wasm"
        subprocess.run([wasm_tools, "validate", str(wasm)], check=True)
        assert "wasi:cli/run@0.2.12" not in composition.component_exports(wasm.read_bytes())  # a library, not a command


WASMEDGE_GUEST = Path(__file__).parent / "data" / "wasmedge" / "wasmedge-ggml-gemma-3.wasm"


def test_a_wasmedge_rust_guest_made_a_component_gives_what_the_module_gives(host: Host, tmp_path: Path) -> None:
    """WasmEdge's own prebuilt example (Rust, wasmedge-wasi-nn), one command away from a component."""
    component = composition.component_new(WASMEDGE_GUEST, tmp_path / "gemma-3.component.wasm")
    host.register("seeded", default_model_path(), config={"n-predict": 12, **GREEDY})
    try:
        module_run, component_run = (host.run(str(wasm), "seeded", "Once upon a time", env={"mmproj": "-", "image": "-"})
                                     for wasm in (WASMEDGE_GUEST, component))
    finally:
        host.registry.unregister("seeded")
    assert module_run.exit_code == component_run.exit_code == 0, component_run.stderr
    assert "[INFO] Number of output tokens: 12" in module_run.stdout
    assert component_run.stdout == module_run.stdout


def test_a_component_past_its_memories_limit_is_refused_naming_it(host: Host, tmp_path: Path) -> None:
    composed = composition.compose("ask", ["chat_template", "model"], tmp_path / "three.wasm")
    with pytest.raises(GuestLimitError, match="more than its limit of 2 linear memories"):
        host.run(str(composed.path), "default", "Hi", limits=Limits(memories=2))
