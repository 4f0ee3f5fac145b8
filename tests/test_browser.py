"""The notebooks in a real browser: JupyterLab on 127.0.0.1 with the project's kernel spec,
Debian's Chromium driven by Playwright (tests/browser_lab.py).

What a person sees: the quickstart runs every cell and its streaming cell's output
changes while the cell runs; in the parameters notebook a slider moved with the keyboard
changes the session (read back from the kernel), a seed typed into its field fixes the
seed, Generate streams into the prompt box, which shows the text it continues and starts
afresh in one click, Stop halts it mid-stream within a second, and a ctx-size change
reloads and says so; an interrupted streaming cell stops, says so in one line, and the
next cell works; a guest's own output (03's shout) is shown open, and the sessions
notebook's tables are short and named alike; a generation shaded by its probabilities
(08) shows a token's alternatives on hover. Each test saves screenshots
under tests/artifacts/ (or $WASINN_LAB_ARTIFACTS); with WASINN_LAB_README_IMAGES set
(`make readme-images`) they also write the README's pictures to docs/images/.

JupyterLab serves a copy of notebooks/ (it saves what it opens), and every wait is on a
condition with a bound. Chromium comes from `make test` (apt); without it these fail,
saying so: they are never skipped.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from browser_lab import ROOT, Chromium, JupyterLab, NotebookPage, Steps, running_lab, screenshot, wait_until

from wasinn_lab.notebook.probabilities import visible

pytestmark = [pytest.mark.browser, pytest.mark.model]

NOTEBOOK_DIR = ROOT / "notebooks"
KERNEL = {"display_name": "Python 3 (wasinn-lab)", "language": "python", "name": "wasinn-lab"}
SCRATCH = "interrupt.ipynb"
STREAMING_CELL = "%%wasi_nn stream --session long -p n-predict=4000 -p temp=0.8\nOnce upon a time"
PLOT_CELL = "%%wasi_nn stream --live-plot -p n-predict=32 -p temp=0\nThe three most useful things to know about WebAssembly are"
# What the chat guest stops at ("\nUser:"), or the start of it.
MARKER_TAIL = re.compile(r"\n\s*U(s(e(r:?)?)?)?\s*$")


def write_scratch(path: Path) -> None:
    notebook = nbformat.v4.new_notebook(metadata={"kernelspec": KERNEL, "language_info": {"name": "python"}})
    notebook.cells = [nbformat.v4.new_markdown_cell("# Interrupt, then carry on"),
                      nbformat.v4.new_code_cell(STREAMING_CELL), nbformat.v4.new_code_cell(PLOT_CELL)]
    nbformat.write(notebook, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JupyterLab]:
    work = tmp_path_factory.mktemp("jupyterlab")
    root = work / "notebooks"
    shutil.copytree(NOTEBOOK_DIR, root, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    write_scratch(root / SCRATCH)
    with running_lab(root, work / "state") as server:
        yield server


@pytest.fixture(scope="module")
def chromium() -> Iterator[Chromium]:
    browser = Chromium()
    try:
        yield browser
    finally:
        browser.close()


@pytest.fixture
def page_factory(chromium: Chromium, lab: JupyterLab, request: pytest.FixtureRequest) -> Iterator[Any]:
    """New pages; each is screenshotted as it ends (an artifact, pass or fail), then closed
    and the kernels it started are shut down."""
    pages: list[Any] = []

    def make(**size: int) -> Any:
        page = chromium.new_page(**size)
        pages.append(page)
        return page

    yield make
    for number, page in enumerate(pages):
        try:
            screenshot(page, f"{request.node.name}-{number}-end")
        except Exception as exc:  # best effort: a crashed page has nothing to show
            print(f"no end screenshot of page {number}: {exc}")
        finally:
            page.context.close()
    lab.shutdown_kernels()


def python(page: NotebookPage, code: str) -> str:
    """What ``code`` prints in the notebook's kernel."""
    return page.kernel_eval(code).strip()


def run_until(page: Any, lab: JupyterLab, path: str, prefix: str, timeout: float) -> tuple[NotebookPage, int]:
    """Open ``path`` and run its code cells up to the first that starts with ``prefix``
    (its index is returned), with no error."""
    notebook = NotebookPage(page, lab, path)
    last = notebook.cell_index(prefix)
    assert notebook.run_cells([i for i in notebook.code_cells() if i <= last], timeout=timeout)
    assert notebook.errors() == []
    return notebook, last


def plain_outputs(page: NotebookPage, index: int) -> str:
    return "\n".join(output.get("data", {}).get("text/plain", "") + output.get("text", "")
                     for output in page.outputs(index))


def test_the_quickstart_runs_every_cell_and_its_streaming_cell_streams(page_factory: Any, lab: JupyterLab) -> None:
    step = Steps()
    page = page_factory()
    notebook = NotebookPage(page, lab, "01-quickstart.ipynb")
    step("notebook and kernel ready")
    # The kernel the notebook names, found from kernels/ with no "select a kernel" dialog.
    assert (notebook.kernel_name(), notebook.kernel_display_name()) == ("wasinn-lab", "Python 3 (wasinn-lab)")
    stream = notebook.cell_index("%%wasi_nn stream")
    notebook.watch("stream", f"() => window.__wasinn.outputNode({stream})", f"() => window.__wasinn.executing({stream})")
    assert notebook.wait_job(notebook.start_all(), timeout=240), "Run All stopped at a failing cell"
    step("Run All")
    assert notebook.errors() == []
    counts = notebook.js("() => window.jupyterapp.shell.currentWidget.content.widgets"
                         ".filter(c => c.model.type === 'code').map(c => c.model.executionCount)")
    assert counts and all(count is not None for count in counts), counts

    changes = notebook.changes("stream", stop=True)
    while_running = [change for change in changes if change["state"] and change["length"] > 0]
    assert len(while_running) >= 3, changes  # the text arrived in steps, not at the end
    assert while_running[0]["length"] < while_running[-1]["length"]

    shown = notebook.outputs(stream)[0]["data"]["text/html"]
    assert "· done" in shown and "usage · " in shown and "prompt tokens" in shown and "generated tokens" in shown
    assert "#fff4f4" not in shown  # no red box: a usage report is not an error
    for index in [i for i in notebook.code_cells() if notebook.js(
            "(i) => window.jupyterapp.shell.currentWidget.content.widgets[i].model.sharedModel.getSource()", i
    ).startswith("%%wasi_nn chat")]:
        texts = notebook.cell(index).locator(".jp-OutputArea pre").all_inner_texts()  # none: an empty reply
        assert not (texts and MARKER_TAIL.search(texts[0])), f"the chat reply shows the turn marker: {texts[0]!r}"
    # No "notified about official Jupyter news?" toast (jupyter/lab/settings/overrides.json).
    assert page.get_by_text("official Jupyter news").count() == 0

    notebook.scroll_to(stream)
    screenshot(notebook.cell(stream), "quickstart-streaming-cell", readme="streaming-cell.png")
    notebook.scroll_to(notebook.cell_index("%%wasi_nn chat --session chat1 -p"))
    screenshot(page, "quickstart-chat")


def test_the_parameter_panel_and_the_prompt_box_steer_the_session(page_factory: Any, lab: JupyterLab) -> None:
    step = Steps()
    page = page_factory(height=1500)
    notebook, _ = run_until(page, lab, "02-parameters.ipynb", "browser = session_browser()", timeout=120)
    step("the widget cells ran")
    panel = notebook.cell(notebook.cell_index("from wasinn_lab.notebook import current_lab as lab"))
    box_index = notebook.cell_index("box = prompt_box")
    box = notebook.cell(box_index)
    knobs = "__import__('wasinn_lab.notebook', fromlist=['current_lab']).current_lab().session('knobs')"

    def knob(label: str, kind: str) -> Any:
        return panel.locator(f".widget-{kind}", has=page.get_by_text(label, exact=True))

    def status() -> str:
        return panel.locator(".widget-vbox > .widget-html").last.inner_text()

    # The seed reads "random", not 4294967295; a number typed into its field fixes the seed
    # (the field was disabled, and typing into it did nothing), and "random" goes back.
    random = knob("random", "checkbox").locator("input")
    assert random.is_checked()
    seed = knob("seed", "text").locator("input")
    seed.fill("1234")
    seed.press("Enter")
    wait_until(lambda: python(notebook, f"print({knobs}.get('seed'))") == "1234", 10, "seed reaching 1234")
    assert not random.is_checked()
    screenshot(panel, "parameters-seed-typed")
    random.check()
    wait_until(lambda: python(notebook, f"print({knobs}.get('seed'))") == "4294967295", 10, "seed back to random")
    step("seed typed, then random again")

    # A slider moved with the keyboard changes the session's parameter.
    before = float(python(notebook, f"print({knobs}.get('temp'))"))
    handle = knob("temp", "hslider").locator(".noUi-handle")
    handle.focus()
    handle.press("ArrowRight")
    handle.press("ArrowRight")
    expected = round(before + 0.1, 2)
    wait_until(lambda: float(python(notebook, f"print({knobs}.get('temp'))")) == expected, 10,
               f"temp reaching {expected} in the kernel")
    assert f"temp = {expected}: applies to the next generation" in status()
    step("temp moved with the keyboard")

    # The box shows what the model continues: the first cell's prompt and text, folded.
    continues = box.locator(".widget-vbox > .widget-html").first
    assert "the model continues session knobs's text so far" in continues.inner_text()
    assert "The three primary colours are" not in continues.inner_text()  # folded until opened
    # Generate streams into the box.
    output = (f"() => window.__wasinn.cellNode({box_index})"
              ".querySelector('.widget-vbox > .widget-html:last-child .widget-html-content')")
    caption = f"() => {{ const node = ({output})(); return node ? node.innerText.split('\\n')[0] : null; }}"
    running = "stream · default · session knobs · running"
    notebook.watch("box", output, caption)
    box.get_by_role("button", name="Generate").click()
    page.wait_for_function(f"() => ({caption})().endsWith('· done')", timeout=180_000)  # a loaded machine: slow
    assert len([c for c in notebook.changes("box") if c["state"] == running]) >= 3, notebook.changes("box")
    assert "session knobs · session knobs" not in box.inner_text()
    step("Generate streamed")
    continues.locator("summary").click()
    assert "My favourite colour is" in continues.inner_text()  # the text grew by this prompt and its answer
    screenshot(box, "parameters-prompt-box-continues")
    box.get_by_role("button", name="Start afresh").click()
    wait_until(lambda: "session knobs has no text yet" in continues.inner_text(), 10, "the box starting afresh")
    step("Start afresh")

    # Stop halts a long generation mid-stream, within a second. n-predict typed in.
    n_predict = knob("n-predict", "text").locator("input")  # BoundedIntText: .widget-text too
    n_predict.fill("2000")
    n_predict.press("Enter")
    wait_until(lambda: python(notebook, f"print({knobs}.get('n-predict'))") == "2000", 10, "n-predict reaching 2000")
    box.locator("textarea").fill("Once upon a time")
    notebook.watch("long", output, caption)
    box.get_by_role("button", name="Generate").click()
    notebook.wait_changes("long", 3, running, timeout=60)
    box.get_by_role("button", name="Stop").click()
    clicked = notebook.last_click()
    page.wait_for_function(f"() => ({caption})().endsWith('· stopped')", timeout=10_000)
    changes = notebook.changes("long", stop=True)
    stopped = next(change["t"] for change in changes if change["state"] and change["state"].endswith("· stopped"))
    assert stopped - clicked < 1000, f"stopped {stopped - clicked:.0f} ms after the click"
    state, tokens = python(notebook, f"print({knobs}.state, {knobs}.generations[-1].output_tokens)").split()
    assert state == "idle" and 0 < int(tokens) < 2000, (state, tokens)
    step("Stop")
    screenshot(page, "parameters-stopped")

    # A context-size change reloads the context and says so.
    ctx = knob("ctx-size", "text").locator("input")
    ctx.fill("2048")
    ctx.press("Enter")
    page.wait_for_function(
        f"() => window.__wasinn.cellNode({notebook.cell_index('from wasinn_lab.notebook import current_lab as lab')})"
        ".innerText.includes('ctx-size = 2048: reloaded the context in')", timeout=60_000)
    assert python(notebook, f"print({knobs}.get('ctx-size'))") == "2048"
    step("ctx-size reloaded")
    notebook.scroll_to(notebook.cell_index("from wasinn_lab.notebook import current_lab as lab"))
    screenshot(panel, "parameters-panel", readme="parameter-panel.png")
    screenshot(box, "parameters-prompt-box")


def test_an_interrupt_stops_a_streaming_cell_and_the_next_cell_works(page_factory: Any, lab: JupyterLab) -> None:
    step = Steps()
    page = page_factory()
    notebook = NotebookPage(page, lab, SCRATCH)
    step("notebook and kernel ready")
    long, plot = notebook.cell_index("%%wasi_nn stream --session long"), notebook.cell_index("%%wasi_nn stream --live-plot")
    notebook.watch("long", f"() => window.__wasinn.outputNode({long})", f"() => window.__wasinn.executing({long})")
    job = notebook.start_cells([long])
    notebook.wait_changes("long", 4, True, timeout=60)  # tokens are flowing
    step("streaming")
    interrupted = notebook.now()
    page.locator(".jp-NotebookPanel-toolbar [data-command='notebook:interrupt-kernel']").click()
    assert notebook.wait_job(job, timeout=30) is False  # the cell failed...
    (error,) = notebook.errors()
    assert error["ename"] == "KeyboardInterrupt"  # ...with the interrupt
    ended = notebook.now()
    assert ended - interrupted < 10_000, f"the cell ended {ended - interrupted:.0f} ms after the interrupt"
    assert "· interrupted" in plain_outputs(notebook, long)
    (line,) = error["traceback"]  # one line, as IPython shows its own magics' errors
    assert "the lab stopped the generation" in line and notebook.cell(long).locator(".jp-OutputArea").inner_text().count(
        "KeyboardInterrupt") == 1
    generated = int(python(notebook, "from wasinn_lab.notebook import current_lab\n"
                                     "print(current_lab().session('long').generations[-1].output_tokens)"))
    assert 0 < generated < 4000
    step("interrupted")
    screenshot(notebook.cell(long), "interrupted-cell")

    assert notebook.run_cells([plot], timeout=60)  # the next cell works
    outputs = notebook.outputs(plot)
    assert not [o for o in outputs if o["output_type"] == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), outputs  # the latency plot
    assert "· done" in plain_outputs(notebook, plot)
    step("the next cell ran")
    notebook.scroll_to(plot)
    screenshot(notebook.cell(plot), "latency-plot", readme="latency-plot.png")


def test_a_guests_own_output_is_shown_open_and_the_tables_are_short(page_factory: Any, lab: JupyterLab) -> None:
    step = Steps()
    notebook, shout = run_until(page_factory(height=1400), lab, "03-build-a-guest.ipynb", "%%wasi_nn shout", timeout=240)
    output = notebook.cell(shout).locator(".jp-OutputArea")
    opened = output.locator("details[open] pre")
    assert opened.count() == 1 and opened.inner_text() == opened.inner_text().upper() != ""  # upper-cased, open
    notebook.scroll_to(shout)
    screenshot(notebook.cell(shout), "shout-stdout-open")
    step("shout's stdout open")

    page = page_factory(height=1400)
    notebook, get = run_until(page, lab, "04-sessions.ipynb", "%wasi_nn get poem", timeout=180)
    shown = notebook.cell(get).locator(".jp-OutputArea").inner_text()
    # n-predict and temp as the cell set them, ctx-size as the bundled model sets it.
    assert "3 of" in shown and "differ from the defaults" in shown and len(shown.splitlines()) < 8, shown
    table = notebook.cell(notebook.cell_index("%wasi_nn sessions")).locator(".jp-OutputArea table")
    headers = table.locator("thead th").all_inner_texts()
    assert {"latest prompt tokens", "evaluated tokens", "generated tokens"} <= {h.strip() for h in headers}, headers
    area = notebook.cell(notebook.cell_index("%wasi_nn sessions")).locator(".jp-OutputArea-output")
    assert table.bounding_box()["width"] <= area.bounding_box()["width"], "the sessions table runs off the right edge"
    notebook.scroll_to(notebook.cell_index("%wasi_nn sessions"))
    screenshot(page, "sessions-tables")
    step("04's tables")


def test_a_shaded_generation_shows_a_tokens_alternatives_on_hover(page_factory: Any, lab: JupyterLab) -> None:
    step = Steps()
    page = page_factory(height=1100)
    notebook, cold = run_until(page, lab, "08-inside-a-generation.ipynb", "%%wasi_nn stream --session cold", timeout=180)
    step("08's first generation ran")
    cell = notebook.cell(cold)
    tokens = cell.locator(".jp-OutputArea span[class$='-t']")
    recorded = json.loads(python(
        notebook, "from wasinn_lab.notebook import current_lab as lab\nimport json\n"
                  "frame = lab().session('cold').token_metrics()\n"
                  "print(json.dumps([[text, [a for a, _ in top]] for text, top in zip(frame['text'], frame['top'])]))"))
    assert tokens.count() == len(recorded) > 0  # one shaded span per generated token
    # The model text above is folded (it is the shaded text, once): what shows is the shaded view.
    assert cell.locator("details:has(summary:text-matches('shaded by probability below'))").count() == 1
    targets = [i for i, (text, _) in enumerate(recorded) if text.strip()]  # not a bare space: something to hover
    index = next((i for i in targets if i >= 4), targets[0])  # one inside the line, for the picture
    notebook.scroll_to(cold)  # first: the screenshot below then needs no scrolling, which would move the mouse's target
    token = tokens.nth(index)
    popup = token.locator("span[class$='-a']")
    assert not popup.is_visible()
    token.hover()
    wait_until(popup.is_visible, 5, "the popup showing on hover")
    shown = popup.inner_text()
    assert "rank 1" in shown  # greedy: the model's likeliest, every time
    for alternative in recorded[index][1]:  # every one of the top 5, whitespace made visible
        assert visible(alternative) in shown, (alternative, shown)
    # Whole and on top: not clipped by the output area, nor under the next line of text.
    assert popup.evaluate("(node) => { const r = node.getBoundingClientRect();"
                          " return node.contains(document.elementFromPoint(r.left + r.width / 2, r.bottom - 3)); }")
    step("hovered a token")
    screenshot(page, "token-probabilities-hover", readme="token-probabilities.png", clip=cell.bounding_box())
    page.mouse.move(0, 0)
    wait_until(lambda: not popup.is_visible(), 5, "the popup hiding again")
    plot = cell.locator(".jp-OutputArea-output img")
    assert plot.count() == 1  # entropy and probability along the generation
