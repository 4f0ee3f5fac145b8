"""What the strict site build (`make docs`) does not check: the README stays a front door,
the links of the README and of the pages work on GitHub too (the build checks them on the
site), and every picture the browser tests take is shown somewhere."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
# An inline link or image target, without a scheme: [text](target) or ![alt](target).
LINK = re.compile(r"\]\((?![a-z]+:)([^)\s#]+)(?:#[^)\s]*)?(?:\s+\"[^\"]*\")?\)")
FENCE = re.compile(r"^```.*?^```", re.M | re.S)


def links(path: Path) -> list[str]:
    return LINK.findall(FENCE.sub("", path.read_text()))


def test_the_readme_is_a_front_door_of_at_most_300_lines() -> None:
    assert len(README.read_text().splitlines()) <= 300


def test_every_relative_link_of_the_readme_and_the_pages_resolves_in_the_repository() -> None:
    broken = [
        f"{path.relative_to(ROOT)}: {target}"
        for path in [README, *PAGES]
        for target in links(path)
        if not (path.parent / target).exists()
    ]
    assert not broken, broken
    assert any(target.startswith("docs/") for target in links(README)), "the README links into no page"


def test_every_picture_in_docs_images_is_shown_on_a_page() -> None:
    shown = {(path.parent / target).resolve() for path in [README, *PAGES] for target in links(path)}
    pictures = sorted((ROOT / "docs" / "images").glob("*.png"))
    assert pictures
    unshown = [picture.name for picture in pictures if picture.resolve() not in shown]
    assert not unshown, f"pictures no page shows: {unshown}"
