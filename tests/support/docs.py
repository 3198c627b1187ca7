"""Read the user documentation (README.md and docs/*.md) the way the tests check it: its fenced code
blocks, its headings as GitHub turns them into anchors, and its links."""

import re
from collections import Counter
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def pages() -> list[Path]:
    """The README first, then every page of docs/."""
    return [README, *sorted(DOCS.glob("*.md"))]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


_FENCE = re.compile(r"^( *)```(\w*)\n(.*?)^\1```$", re.MULTILINE | re.DOTALL)


def code_blocks(path: Path, language: str) -> list[str]:
    """The fenced blocks of `language`, indented ones (in a list item) included, unindented."""
    blocks = []
    for match in _FENCE.finditer(path.read_text()):
        if match.group(2) == language:
            indent = len(match.group(1))
            blocks.append("".join(line[indent:] for line in match.group(3).splitlines(keepends=True)))
    return blocks


def yaml_documents(path: Path) -> list[Any]:
    return [doc for block in code_blocks(path, "yaml") for doc in yaml.safe_load_all(block)]


def servicebuilds(path: Path) -> list[dict[str, Any]]:
    """The ServiceBuild examples a page shows, for users to copy."""
    documents = yaml_documents(path)
    return [doc for doc in documents if isinstance(doc, dict) and doc.get("kind") == "ServiceBuild"]


def prose(path: Path) -> str:
    """The page without its fenced code blocks."""
    return _FENCE.sub("", path.read_text())


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces turned into `-`."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every heading's anchor; a repeated heading gets `-1`, `-2`, … as on GitHub."""
    seen: Counter[str] = Counter()
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(path), flags=re.MULTILINE):
        base = anchor(heading)
        found.add(f"{base}-{seen[base]}" if seen[base] else base)
        seen[base] += 1
    return frozenset(found)


_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def links(path: Path) -> list[str]:
    """The targets of the page's Markdown links, outside code blocks."""
    return _LINK.findall(prose(path))
