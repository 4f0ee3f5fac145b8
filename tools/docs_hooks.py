"""MkDocs hooks of the documentation site (mkdocs.yml names this file).

- The notebooks: every ``notebooks/*.ipynb`` becomes a page, in the "Notebooks" section of
  the navigation, shown with the outputs of its executed copy in ``build/notebooks/`` (made
  by the notebook tests or by ``make docs``: tests/notebook_run.py). A copy that is missing,
  was made from other cells than the notebook has now, or holds an error fails the build,
  saying what to run.
- Links: pages are written for GitHub, with links relative to the file they are in, and
  the README and some other repository files are shown on the site as pages of their own
  (``PUBLISHED``). A link that reaches one of those files is pointed at its page, so one
  link works in both places.
- The API reference: every name in ``wasinn_lab.__all__`` and ``wasinn_lab.widgets.__all__``
  has its ``::: wasinn_lab.NAME`` block on api.md, and each, and each public method and
  property of it, a docstring. A gap is a warning, which the strict build makes an error.
"""

from __future__ import annotations

import logging
import posixpath
import re
from pathlib import Path
from typing import Any

import griffe
import nbformat
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = ROOT / "notebooks"
EXECUTED = ROOT / "build" / "notebooks"
NOTEBOOK_SECTION = "Notebooks"
API_PAGE = "api.md"

# Repository files outside docs/ that a page of the site shows whole (with include-markdown):
# the file, and the page (relative to docs/) that shows it.
PUBLISHED = {
    "README.md": "index.md",
    "guests/README.md": "guests.md",
    "guests/wit/README.md": "wit.md",
    "benchmarks/RESULTS.md": "benchmark-results.md",
}

log = logging.getLogger("mkdocs.hooks.wasinn_lab")

# An inline link or image target: ](target "title"), the target without spaces.
LINK = re.compile(r"(\]\()([^)\s]+)((?:\s+\"[^\"]*\")?\))")


def notebook_title(path: Path) -> str:
    """The notebook's title: its first cell is a Markdown ``# Title`` (tests/test_notebooks.py)."""
    first = nbformat.read(path, as_version=4).cells[0].source
    return first.splitlines()[0].removeprefix("# ").strip()


def on_config(config: MkDocsConfig) -> MkDocsConfig:
    for item in config.nav or []:
        if isinstance(item, dict) and NOTEBOOK_SECTION in item:
            item[NOTEBOOK_SECTION] = [
                *item[NOTEBOOK_SECTION],
                *({notebook_title(path): f"notebooks/{path.name}"} for path in sorted(NOTEBOOKS.glob("*.ipynb"))),
            ]
            return config
    raise PluginError(f"mkdocs.yml's nav has no {NOTEBOOK_SECTION!r} section for the notebooks")


def executed_problem(source: Path, executed: Path) -> str | None:
    """Why the executed copy cannot be shown, or None."""
    name = source.relative_to(ROOT)
    remedy = (f"execute it with `.venv/bin/python tests/notebook_run.py {name}` (`make docs` does so for a "
              "notebook newer than its copy, `make test` for all)")
    if not executed.exists():
        return f"{name} has no executed copy in build/notebooks/: {remedy}"
    ran, saved = nbformat.read(executed, as_version=4), nbformat.read(source, as_version=4)
    if [(cell.cell_type, cell.source) for cell in ran.cells] != [(cell.cell_type, cell.source) for cell in saved.cells]:
        return f"the executed copy of {name} was run from other cells than it has now: {remedy}"
    for cell in ran.cells:
        if cell.cell_type != "code":
            continue
        if cell.execution_count is None:
            return f"the executed copy of {name}: a cell did not run ({cell.source[:60]!r}): {remedy}"
        for output in cell.outputs:
            if output.output_type == "error":
                return f"the executed copy of {name}: a cell failed ({cell.source[:60]!r}: {output.ename}): {remedy}"
    return None


@event_priority(100)  # before mkdocs-jupyter, which makes pages of the .ipynb files it is given
def on_files(files: Files, config: MkDocsConfig) -> Files:
    for source in sorted(NOTEBOOKS.glob("*.ipynb")):
        executed = EXECUTED / source.name
        problem = executed_problem(source, executed)
        if problem:
            raise PluginError(problem)
        # A file of the site at notebooks/NAME, read from build/notebooks/NAME (mkdocs-jupyter
        # reads it through the source folder, so not File.generated, which has none).
        files.append(File(f"notebooks/{source.name}", src_dir=str(EXECUTED.parent), dest_dir=config.site_dir,
                          use_directory_urls=config.use_directory_urls))
    return files


def published_link(page_path: str, target: str) -> str:
    """``target``, written relative to the page's own file, made to lead to the site's page
    for a repository file the site publishes; any other target as it is."""
    if "://" in target or target.startswith(("#", "/", "mailto:")):
        return target
    path, hash_, anchor = target.partition("#")
    in_repository = posixpath.normpath(posixpath.join("docs", posixpath.dirname(page_path), path))
    if in_repository in PUBLISHED:
        page_in_docs = PUBLISHED[in_repository]
    elif in_repository.startswith("notebooks/") and in_repository.endswith(".ipynb"):
        page_in_docs = in_repository
    else:
        return target
    return posixpath.relpath(page_in_docs, posixpath.dirname(page_path) or ".") + hash_ + anchor


@event_priority(-100)  # after include-markdown has put the included files' links relative to the page
def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    markdown = LINK.sub(lambda m: m[1] + published_link(page.file.src_uri, m[2]) + m[3], markdown)
    if page.file.src_uri == API_PAGE:
        check_api_reference(markdown)
    return markdown


def public_names() -> list[str]:
    import wasinn_lab
    import wasinn_lab.widgets

    return [
        *(f"wasinn_lab.{name}" for name in wasinn_lab.__all__ if name != "__version__"),
        *(f"wasinn_lab.widgets.{name}" for name in wasinn_lab.widgets.__all__),
    ]


def check_api_reference(markdown: str) -> None:
    shown = set(re.findall(r"^::: (\S+)", markdown, re.M))
    package: Any = griffe.load("wasinn_lab", search_paths=[str(ROOT)], resolve_aliases=True, resolve_external=False)
    for name in public_names():
        if name not in shown:
            log.warning(f"{API_PAGE} does not show the public name {name}: add a `::: {name}` block")
        obj = package[name.removeprefix("wasinn_lab.")]
        gaps = [] if obj.docstring else [name]
        if obj.is_class:
            gaps += [
                f"{name}.{member_name}" for member_name, member in obj.members.items()
                if not member_name.startswith("_") and not member.docstring
                and (member.is_function or "property" in member.labels)
            ]
        for gap in gaps:
            log.warning(f"the public {gap} has no docstring: the API reference shows it as a gap")

