"""An agent folder's README as named sections, so each publishing step rewrites only its own part.

``publish_expert`` writes the card's body; ``publish_exits`` (one section per method) and others add sections
between ``<!-- section:NAME -->`` and ``<!-- /section:NAME -->`` markers. Re-publishing the expert keeps the other
steps' sections (:func:`carry_sections`), so the card never loses what was measured.
"""

from __future__ import annotations

import re

_SECTION = re.compile(r"<!-- section:(?P<name>[\w.-]+) -->\n.*?<!-- /section:(?P=name) -->\n?", re.DOTALL)


def _check_name(name: str) -> str:
    if not re.fullmatch(r"[\w.-]+", name):
        raise ValueError(f"section name must be letters, digits, '_', '-' or '.', got {name!r}")
    return name


def section_block(name: str, body: str) -> str:
    """``body`` wrapped in the start and end markers of section ``name``."""
    _check_name(name)
    return f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- /section:{name} -->\n"


def sections(text: str) -> dict[str, str]:
    """The marked sections of ``text``, name -> whole block (markers included), in order of appearance."""
    return {m.group("name"): m.group(0) for m in _SECTION.finditer(text)}


def upsert_section(text: str, name: str, body: str) -> str:
    """``text`` with section ``name`` replaced by ``body``; appended at the end if it is not there yet."""
    block = section_block(name, body)
    current = sections(text).get(name)
    if current is not None:
        return text.replace(current, block, 1)
    return f"{text.rstrip()}\n\n{block}" if text.strip() else block


def carry_sections(old_text: str, new_text: str) -> str:
    """``new_text`` plus every section of ``old_text`` that ``new_text`` does not have (appended in order)."""
    have = sections(new_text)
    for name, block in sections(old_text).items():
        if name not in have:
            new_text = f"{new_text.rstrip()}\n\n{block}"
    return new_text
