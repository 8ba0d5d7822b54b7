"""Check that _toc.yml and book/ agree: every page (notebook or Markdown) in book/ is in the table of
contents, and every entry in the table of contents names a file that exists.

Usage: python tools/toc_check.py   (exit status 1 and one line per problem when they disagree)
"""
from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SUFFIXES = (".ipynb", ".md")


def toc_entries(node) -> list[str]:
    """Every `root` and `file` value in the table of contents, in order."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("root", "file") and isinstance(value, str):
                found.append(value)
            else:
                found.extend(toc_entries(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(toc_entries(item))
    return found


def problems(root: Path = ROOT) -> list[str]:
    """What is wrong, one message per problem; empty when the toc and book/ agree."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    listed = {}
    for entry in toc_entries(toc):
        path = Path(entry)
        listed[path.with_suffix("").as_posix() if path.suffix in SUFFIXES else entry] = entry
    pages = {
        p.relative_to(root).with_suffix("").as_posix()
        for p in (root / "book").rglob("*")
        if p.suffix in SUFFIXES
        and not any(part.startswith((".", "_")) for part in p.relative_to(root / "book").parts)
    }
    messages = [f"{page} is in book/ but not in _toc.yml" for page in sorted(pages - listed.keys())]
    for stem, entry in listed.items():
        if not any((root / (stem + suffix)).is_file() for suffix in SUFFIXES):
            messages.append(f"_toc.yml lists {entry}, but no {entry}.ipynb or {entry}.md exists")
    return messages


if __name__ == "__main__":
    found = problems()
    for message in found:
        print(message)
    sys.exit(1 if found else 0)
