"""The README's layout lists every module, and the design notes it points at are in the repository."""

from __future__ import annotations

import os
import re

from helpers import ROOT

PACKAGE = os.path.join(ROOT, "src", "fentry")


def readme() -> str:
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return f.read()


def layout_entries() -> dict[str, str]:
    """The layout block's entries ("cli.py", "report/", ...) and their text,
    continuation lines included."""
    text = readme()
    block = text[text.index("## Layout"):]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    entries: dict[str, str] = {}
    name = None
    for line in block.splitlines():
        m = re.match(r"  (\S+)\s", line + " ")
        if m:
            name = m[1]
            entries[name] = line
        elif name is not None and line.startswith("   "):
            entries[name] += " " + line.strip()
    return entries


def test_layout_lists_every_module():
    entries = layout_entries()
    missing = []
    for dirpath, dirnames, filenames in os.walk(PACKAGE):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        sub = os.path.relpath(dirpath, PACKAGE)
        for f in sorted(filenames):
            if not f.endswith(".py"):
                continue
            if sub == ".":
                listed = f in entries
            elif f == "__init__.py":
                listed = f"{sub}/" in entries
            else:
                listed = re.search(rf"\b{re.escape(f)}\b", entries.get(f"{sub}/", "")) is not None
            if not listed:
                missing.append(f if sub == "." else f"{sub}/{f}")
    assert missing == [], f"README's layout does not list: {', '.join(missing)}"


def test_docs_the_readme_points_at_are_in_the_repository():
    text = readme()
    assert "../shared" not in text      # notes outside the repository: not shipped
    for name in re.findall(r"\(docs/([\w.-]+)\)", text):
        assert os.path.isfile(os.path.join(ROOT, "docs", name)), name
    assert os.path.isfile(os.path.join(ROOT, "docs", "design.md"))
    assert os.path.isfile(os.path.join(ROOT, "docs", "raw-format.md"))
