"""The zoo's Markdown listing: the table of registry entries between two markers of MODEL_ZOO.md (or of the
listing that scripts/export_zoo.py keeps next to a user's own registry)."""


class ListingError(ValueError):
    """A listing file that cannot be updated; the message names it and the fix."""


TABLE_START = "<!-- zoo table: generated from models/zoo.yaml by scripts/export_zoo.py; edit the registry -->"
TABLE_END = "<!-- end of zoo table -->"


def markdown_table(entries):
    """The MODEL_ZOO.md table of all entries, in registry order."""
    lines = ["| name | source | recipe | top-1 | top-5 | file | sha256 | config | evaluate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for e in entries:
        cells = [f"`{e['name']}`", e["source"], e["recipe"], _pct(e["top1"]), _pct(e["top5"]),
                 f"[`{e['file']}`]({e['url']})" if e["url"] else f"`{e['file']}`",
                 f"`{e['sha256']}`" if e["sha256"] else "not published",
                 f"`{e['config']}`" if e["config"] else "in the file", f"`{e['eval']}`"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def update_markdown(text, entries, path="MODEL_ZOO.md"):
    """`text` (of the listing `path`) with the table between its markers regenerated from `entries`."""
    if TABLE_START not in text or TABLE_END not in text:
        raise ListingError(f"{path} lacks the table markers {TABLE_START!r} and {TABLE_END!r}; add them where the "
                       "table goes, or remove the file to have a new one written")
    head, rest = text.split(TABLE_START, 1)
    return head + TABLE_START + "\n" + markdown_table(entries) + TABLE_END + rest.split(TABLE_END, 1)[1]


def new_listing(registry):
    """The text of a fresh listing for the registry file `registry`: a heading and an empty table."""
    return (f"# Model zoo\n\nModels of the registry {registry}, exported by scripts/export_zoo.py; "
            f"evaluate one with `python eval.py --zoo NAME --zoo-registry {registry} --zoo-dir FOLDER --data ROOT`.\n\n"
            f"{TABLE_START}\n{TABLE_END}\n")


def _pct(value):
    return "–" if value is None else f"{value:g}"
