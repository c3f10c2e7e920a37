"""The zoo's Markdown listing: the table regenerated between its markers, and a fresh listing for a new registry."""
import copy
import os
import re

import pytest

from models import zoo
from results import zoo_markdown as md
from tests.engine.tiny import REPO
from tests.models.zoo_entries import entry


def rows(text):
    """{name: cells} of the listing's table rows."""
    found = {}
    for line in text.splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if cells and cells[0].startswith("`"):
            found[cells[0].strip("`")] = cells
    return found


def test_markdown_table_is_regenerated_between_markers():
    entries = zoo.load_registry() + [entry()]
    text = f"intro\n{md.TABLE_START}\nold table\n{md.TABLE_END}\noutro\n"
    updated = md.update_markdown(text, entries)
    assert updated.startswith("intro\n") and updated.endswith(f"{md.TABLE_END}\noutro\n")
    assert "old table" not in updated and "| `tiny` | this repository |" in updated and "0" * 64 in updated
    with pytest.raises(md.ListingError, match="listing.md lacks the table markers"):
        md.update_markdown("no markers", entries, "listing.md")
    assert copy.deepcopy(entries) == entries


def test_the_repositorys_listing_is_the_table_of_its_registry():
    with open(os.path.join(REPO, "MODEL_ZOO.md")) as f:
        text = f.read()
    assert md.update_markdown(text, zoo.load_registry()) == text


def test_a_new_listing_takes_a_table():
    text = md.update_markdown(md.new_listing("zoo/zoo.yaml"), [entry(top1=None)])
    assert text.startswith("# Model zoo\n") and "zoo/zoo.yaml" in text
    assert rows(text)["tiny"][3] == "–" and rows(text)["tiny"][8] == f"`{entry()['eval']}`"
