"""README sections of an agent folder: replaced in place, appended when new, carried over on re-publishing."""

from __future__ import annotations

import pytest

from ee_rl.rl.agent_card import carry_sections, section_block, sections, upsert_section


def test_upsert_appends_then_replaces_only_its_own_section() -> None:
    text = "# Pong\n\nbody\n"
    text = upsert_section(text, "exits-ztw", "ztw v1")
    text = upsert_section(text, "exits-sdn", "sdn v1")
    text = upsert_section(text, "exits-ztw", "ztw v2")
    assert text.startswith("# Pong\n\nbody\n")
    assert list(sections(text)) == ["exits-ztw", "exits-sdn"]
    assert sections(text)["exits-ztw"] == section_block("exits-ztw", "ztw v2")
    assert "ztw v1" not in text and "sdn v1" in text


def test_carry_sections_keeps_what_the_new_text_lacks() -> None:
    old = upsert_section(upsert_section("# old card\n", "exits-ztw", "Z"), "sweep", "S")
    new = upsert_section("# new card\n", "sweep", "S2")
    merged = carry_sections(old, new)
    assert merged.startswith("# new card\n")
    assert sections(merged)["sweep"] == section_block("sweep", "S2")
    assert sections(merged)["exits-ztw"] == section_block("exits-ztw", "Z")
    assert carry_sections("no sections", new) == new


def test_bad_section_name_is_refused() -> None:
    with pytest.raises(ValueError, match="section name"):
        section_block("two words", "x")
