"""JupyterLab in a real browser, for the browser tests (tests/test_browser.py).

``JupyterLab`` starts a JupyterLab server on 127.0.0.1 (a free port, a random token,
settings, workspaces, runtime and config in a temporary directory, no news, no update
check, the app exposed as ``window.jupyterapp``) with the project's kernel spec found in
``kernels/`` through ``JUPYTER_PATH``, and always stops it with every kernel it started.
``Chromium`` drives Debian's Chromium (Playwright's own browser download cannot work
here) through Python Playwright. ``NotebookPage`` is one open notebook: it waits until
the notebook and its kernel are really ready (a cell and an "idle" indicator show up
before they are, and keys sent then are lost), runs cells, watches an element's
``innerText`` from inside the page with a ``requestAnimationFrame`` loop, and evaluates
code in the notebook's kernel.

Every wait is on a condition, with a bound.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
# The JupyterLab settings `make lab` and Binder install (no news prompt, no update check).
LAB_OVERRIDES = ROOT / "jupyter" / "lab" / "settings" / "overrides.json"

# This machine's network is closed: without these Chromium keeps trying to reach out.
CHROMIUM_FLAGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "chromium", "chromium-browser")  # the first skips Debian's wrapper

# Where a test's screenshots go (ignored by git); README pictures go to docs/images
# when WASINN_LAB_README_IMAGES is set (`make readme-images`).
ARTIFACTS = Path(os.environ.get("WASINN_LAB_ARTIFACTS") or ROOT / "tests" / "artifacts")
README_IMAGES = ROOT / "docs" / "images"


def chromium_path() -> str:
    """Debian's Chromium (``WASINN_LAB_CHROMIUM`` overrides); ``make test`` installs it."""
    wanted = os.environ.get("WASINN_LAB_CHROMIUM")
    for candidate in ([wanted] if wanted else CHROMIUM_CANDIDATES):
        found = candidate if os.path.isfile(candidate) and os.access(candidate, os.X_OK) else shutil.which(candidate)
        if found:
            return found
    raise RuntimeError(
        f"no Chromium found ({wanted or ', '.join(CHROMIUM_CANDIDATES)}): `make test` installs Debian's "
        "(apt-get install -y chromium); or set WASINN_LAB_CHROMIUM to a Chromium executable"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Steps:
    """Prints how long each step of a test took (pytest shows it when the test fails)."""

    def __init__(self) -> None:
        self._started = self._last = time.monotonic()

    def __call__(self, what: str) -> None:
        now = time.monotonic()
        print(f"{now - self._started:6.1f} s (+{now - self._last:4.1f}) {what}")
        self._last = now


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll ``condition()`` until it is truthy (returned) or ``timeout`` passes (raises)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:g} s")
        time.sleep(interval)


class JupyterLab:
    """A JupyterLab server serving ``root_dir``, with all its state under ``work``."""

    START_TIMEOUT = 60.0

    def __init__(self, root_dir: Path, work: Path) -> None:
        self.root_dir = root_dir
        self.work = work
        self.token = secrets.token_hex(16)
        self.port = 0
        self.log_path = work / "jupyterlab.log"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}?token={self.token}"

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for name, sub in (("JUPYTERLAB_SETTINGS_DIR", "settings"), ("JUPYTERLAB_WORKSPACES_DIR", "workspaces"),
                          ("JUPYTER_RUNTIME_DIR", "runtime"), ("JUPYTER_CONFIG_DIR", "config"), ("IPYTHONDIR", "ipython")):
            (self.work / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(self.work / sub)
        # kernels/wasinn-lab, ahead of any installed copy (JUPYTER_PATH comes first).
        env["JUPYTER_PATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("JUPYTER_PATH")])])
        return env

    def write_settings(self) -> None:
        # The project's overrides, in an application settings directory of this server's own.
        app_settings = self.work / "app-settings"
        app_settings.mkdir(parents=True, exist_ok=True)
        shutil.copy(LAB_OVERRIDES, app_settings / "overrides.json")
        # Every cell attached to the page, so a cell scrolled away still renders what the
        # tests watch (JupyterLab 4 skips rendering off-screen cells by default).
        tracker = self.work / "settings" / "@jupyterlab" / "notebook-extension" / "tracker.jupyterlab-settings"
        tracker.parent.mkdir(parents=True, exist_ok=True)
        tracker.write_text(json.dumps({"windowingMode": "none"}))

    def start(self) -> None:
        env = self.environment()
        self.write_settings()
        for attempt in range(3):  # a free port can be taken between finding and binding it
            self.port = free_port()
            command = [
                str(Path(sys.executable).with_name("jupyter-lab")),
                "--no-browser", "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
                f"--ServerApp.token={self.token}", f"--ServerApp.root_dir={self.root_dir}", "--allow-root",
                "--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                "--LabApp.expose_app_in_browser=True", f"--LabApp.app_settings_dir={self.work / 'app-settings'}",
            ]
            log = self.log_path.open("ab")
            self._process = subprocess.Popen(command, env=env, cwd=self.root_dir, stdin=subprocess.DEVNULL,
                                             stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            log.close()
            try:
                wait_until(self._ready, self.START_TIMEOUT, "JupyterLab answering on /api/status", interval=0.2)
                return
            except RuntimeError:
                self.stop()
                if attempt == 2 or "already in use" not in self.log_tail():
                    raise
            except BaseException:
                self.stop()
                raise

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise RuntimeError(f"JupyterLab exited with {self._process.returncode}:\n{self.log_tail()}")
        try:
            with urllib.request.urlopen(self.url("api/status"), timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def api(self, method: str, path: str) -> Any:
        request = urllib.request.Request(self.url(f"api/{path}"), method=method)
        with urllib.request.urlopen(request, timeout=30) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """End every notebook's session and kernel, so the next test has the CPU."""
        for session in self.api("GET", "sessions"):
            self.api("DELETE", f"sessions/{session['id']}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop the server (it shuts its kernels down), then end whatever is left of it
        and of its kernels (each kernel runs in a process group of its own)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
        except psutil.NoSuchProcess:
            family = []
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        for member in family:
            try:
                member.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(family, timeout=10)


class Chromium:
    """Debian's Chromium through Python Playwright, headless."""

    def __init__(self) -> None:
        from playwright.sync_api import sync_playwright

        self._playwright = sync_playwright().start()
        try:
            self.browser = self._playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                                            args=CHROMIUM_FLAGS, timeout=60_000)
        except BaseException:
            self._playwright.stop()
            raise

    def new_page(self, width: int = 1200, height: int = 900) -> Any:
        context = self.browser.new_context(viewport={"width": width, "height": height})
        context.set_default_timeout(30_000)
        return context.new_page()

    def close(self) -> None:
        try:
            self.browser.close()
        finally:
            self._playwright.stop()


# Page-side helpers, installed once per page as window.__wasinn.
_HELPERS = r"""
() => {
  const app = window.jupyterapp;
  const current = () => app.shell.currentWidget;
  const cells = () => current().content.widgets;
  document.addEventListener('click', () => window.__wasinn.clicks.push(performance.now()), true);
  window.__wasinn = {
    // Index of the first cell whose source starts with `prefix`.
    cellIndex(prefix) {
      return cells().findIndex(cell => cell.model.sharedModel.getSource().startsWith(prefix));
    },
    // Run cells one by one in the page, as the Run button does; `job` records the outcome.
    runCells(indices, job) {
      const state = window.__wasinn.jobs[job] = {done: false, ok: null, error: null};
      (async () => {
        for (const index of indices) {
          const nb = current().content;
          nb.activeCellIndex = index;
          nb.deselectAll();
          const ok = await app.commands.execute('notebook:run-cell');
          if (!ok) { state.ok = false; return; }
        }
        state.ok = true;
      })().catch(e => { state.error = String(e); }).finally(() => { state.done = true; });
    },
    runAll(job) {
      const state = window.__wasinn.jobs[job] = {done: false, ok: null, error: null};
      app.commands.execute('notebook:run-all-cells')
        .then(ok => { state.ok = ok; }, e => { state.error = String(e); })
        .finally(() => { state.done = true; });
    },
    jobs: {},
    // When the page last saw a click (its own clock: what Playwright's click costs is not counted).
    clicks: [],
    // Record every change of `element()`'s innerText, frame by frame, with the time and
    // what `state()` said then.
    watch(name, element, state) {
      const record = window.__wasinn.watches[name] = {changes: [], last: null, on: true};
      const frame = () => {
        if (!record.on) return;
        const node = element();
        const text = node ? node.innerText : null;
        if (text !== record.last) {
          record.changes.push({t: performance.now(), length: text === null ? -1 : text.length,
                               state: state(), text: text === null ? null : text.slice(-300)});
          record.last = text;
        }
        requestAnimationFrame(frame);
      };
      requestAnimationFrame(frame);
    },
    watches: {},
    cellNode(index) { return cells()[index].node; },
    outputNode(index) { return cells()[index].outputArea.node; },
    executing(index) {
      const prompt = cells()[index].node.querySelector('.jp-InputPrompt');
      return !!prompt && prompt.innerText.includes('*');
    },
    outputs(index) { return cells()[index].model.outputs.toJSON(); },
    // Run `code` in the notebook's kernel (not in a cell) and collect what it prints.
    kernelEval(code, job) {
      const state = window.__wasinn.jobs[job] = {done: false, ok: null, error: null, text: ''};
      const kernel = current().sessionContext.session.kernel;
      const future = kernel.requestExecute({code, silent: false, store_history: false});
      future.onIOPub = msg => {
        const c = msg.content;
        if (msg.header.msg_type === 'stream') state.text += c.text;
        else if (msg.header.msg_type === 'execute_result') state.text += c.data['text/plain'];
        else if (msg.header.msg_type === 'error') state.error = `${c.ename}: ${c.evalue}`;
      };
      future.done.then(reply => { state.ok = reply.content.status === 'ok'; },
                       e => { state.error = String(e); }).finally(() => { state.done = true; });
    },
  };
}
"""

_READY = r"""
(path) => {
  const app = window.jupyterapp;
  if (!app || !app.shell) return false;
  const widget = app.shell.currentWidget;
  if (!widget || !widget.context || widget.context.path !== path || !widget.content) return false;
  const session = widget.sessionContext;
  const kernel = session && session.session && session.session.kernel;
  return !!kernel && kernel.connectionStatus === 'connected' && kernel.status === 'idle'
    && session.isReady && widget.content.widgets.length > 0;
}
"""


class NotebookPage:
    """One notebook open in a page, its kernel connected and idle."""

    def __init__(self, page: Any, lab: JupyterLab, path: str, timeout: float = 90) -> None:
        self.page = page
        self.path = path
        # A workspace of its own: the default one would reopen the notebooks of earlier tests.
        workspace = "w-" + secrets.token_hex(4)
        page.goto(lab.url(f"lab/workspaces/{workspace}/tree/{path}"), wait_until="domcontentloaded",
                  timeout=timeout * 1000)
        page.wait_for_function(_READY, arg=path, timeout=timeout * 1000, polling=100)
        page.evaluate(_HELPERS)
        # Name each cell's node by its index, for locators.
        self.js("() => window.jupyterapp.shell.currentWidget.content.widgets"
                ".forEach((cell, i) => { cell.node.dataset.wasinnCell = String(i); })")
        self._jobs = 0

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def kernel_name(self) -> str:
        return self.js("() => window.jupyterapp.shell.currentWidget.sessionContext.session.kernel.name")

    def kernel_display_name(self) -> str:
        return self.js("() => window.jupyterapp.shell.currentWidget.sessionContext.kernelDisplayName")

    def cell_index(self, prefix: str) -> int:
        index = self.js("(p) => window.__wasinn.cellIndex(p)", prefix)
        assert index >= 0, f"no cell starts with {prefix!r} in {self.path}"
        return int(index)

    def code_cells(self) -> list[int]:
        return self.js("() => window.jupyterapp.shell.currentWidget.content.widgets"
                       ".map((c, i) => [c.model.type, i]).filter(([t]) => t === 'code').map(([, i]) => i)")

    def _job(self) -> str:
        self._jobs += 1
        return f"job{self._jobs}"

    def _await_job(self, job: str, timeout: float, what: str) -> dict[str, Any]:
        self.page.wait_for_function("(j) => window.__wasinn.jobs[j].done", arg=job, timeout=timeout * 1000, polling=100)
        return self.js("(j) => window.__wasinn.jobs[j]", job)

    def start_cells(self, indices: list[int]) -> str:
        job = self._job()
        self.js("([i, j]) => window.__wasinn.runCells(i, j)", [indices, job])
        return job

    def run_cells(self, indices: list[int], timeout: float = 120) -> bool:
        state = self._await_job(self.start_cells(indices), timeout, f"running cells {indices}")
        assert state["error"] is None, state["error"]
        return bool(state["ok"])

    def start_all(self) -> str:
        job = self._job()
        self.js("(j) => window.__wasinn.runAll(j)", job)
        return job

    def wait_job(self, job: str, timeout: float = 120) -> bool:
        state = self._await_job(job, timeout, job)
        assert state["error"] is None, state["error"]
        return bool(state["ok"])

    def kernel_eval(self, code: str, timeout: float = 60) -> str:
        """Run ``code`` in the notebook's kernel, outside any cell; what it printed."""
        job = self._job()
        self.js("([c, j]) => window.__wasinn.kernelEval(c, j)", [code, job])
        state = self._await_job(job, timeout, f"kernel: {code!r}")
        assert state["ok"] and state["error"] is None, f"{code!r} failed in the kernel: {state['error']}"
        return str(state["text"])

    def watch(self, name: str, element_js: str, state_js: str = "() => null") -> None:
        """Record each change of an element's innerText (``element_js`` returns the node),
        with its time (ms, the page's clock) and ``state_js()`` then."""
        self.js(f"() => window.__wasinn.watch({json.dumps(name)}, {element_js}, {state_js})")

    def wait_changes(self, name: str, count: int, state: Any, timeout: float) -> None:
        """Until ``count`` changes were recorded with ``state``."""
        self.page.wait_for_function(
            "([n, k, s]) => window.__wasinn.watches[n].changes.filter(c => c.state === s).length >= k",
            arg=[name, count, state], timeout=timeout * 1000, polling="raf")

    def changes(self, name: str, stop: bool = False) -> list[dict[str, Any]]:
        return self.js("([n, s]) => { const w = window.__wasinn.watches[n]; if (s) w.on = false; return w.changes; }",
                       [name, stop])

    def now(self) -> float:
        return float(self.js("() => performance.now()"))

    def last_click(self) -> float:
        """When the page last saw a click (``performance.now()``)."""
        return float(self.js("() => window.__wasinn.clicks[window.__wasinn.clicks.length - 1]"))

    def outputs(self, index: int) -> list[dict[str, Any]]:
        return self.js("(i) => window.__wasinn.outputs(i)", index)

    def cell(self, index: int) -> Any:
        """A Playwright locator for the cell (clicks, typing, screenshots)."""
        return self.page.locator(f'[data-wasinn-cell="{index}"]')

    def scroll_to(self, index: int) -> None:
        self.js("(i) => window.__wasinn.cellNode(i).scrollIntoView({block: 'start'})", index)

    def errors(self) -> list[dict[str, Any]]:
        """Every error output of every code cell."""
        return [output for index in self.code_cells() for output in self.outputs(index)
                if output.get("output_type") == "error"]


@contextmanager
def running_lab(root_dir: Path, work: Path) -> Iterator[JupyterLab]:
    lab = JupyterLab(root_dir, work)
    lab.start()
    try:
        yield lab
    finally:
        lab.stop()


def screenshot(target: Any, name: str, *, readme: str | None = None, clip: dict[str, float] | None = None) -> Path:
    """Save a screenshot of a page or locator as an artifact, and as a README picture
    (docs/images/README) when WASINN_LAB_README_IMAGES is set. ``clip``: a region of the
    page as it is (a locator's screenshot lays the page out again, and a hover's popup
    can be gone from it)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    target.screenshot(path=str(path), **({"clip": clip} if clip else {}))
    if readme and os.environ.get("WASINN_LAB_README_IMAGES"):
        from PIL import Image

        README_IMAGES.mkdir(parents=True, exist_ok=True)
        with Image.open(path) as image:  # a palette keeps text sharp at a fraction of the size
            image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT).save(
                README_IMAGES / readme, optimize=True)
    return path
