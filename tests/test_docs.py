"""The documentation's links resolve and its commands run as printed: scripts and flags exist, shell parses.

Checked files: README.md, MODEL_ZOO.md and docs/*.md. Commands are the lines of ```bash/```sh/```console
blocks (in a block holding `$ ` lines, only those), `$ ` lines of any block, usage lines of ```text blocks
(scripts and flags only: they hold placeholders such as [--out DIR]) and inline code spans that start like a
command (`python ...`, `torchrun ...`, `bash scripts/...`, `sbatch ...`, `scripts/...`). Config keys
(`section.key`, `section.key=value`) in inline code and commands must exist in configs/schema.py.
"""
import json
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 160

SHELL_LANGS = {"bash", "sh", "shell", "console", "zsh"}
USAGE_LANGS = {"text", "usage", "none", ""}
STARTERS = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(?:time\s+)?"
                      r"(?:(?:[\w.~-]*/)*(?:python3?(?:\.\d+)?|torchrun)\s|(?:bash|sh|sbatch)\s|(?:\./)?scripts/\S)")
FENCE = re.compile(r"^\s*(`{3,}|~{3,})\s*([\w+-]*)")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_LINK = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$")
INLINE_CODE = re.compile(r"(`+)(.+?)\1")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
PATH_SUFFIXES = (".py", ".sh", ".sbatch", ".yaml", ".yml", ".md")


@dataclass
class Command:
    file: str
    line: int
    text: str
    syntax: bool  # whether it must parse as shell (usage lines hold placeholders such as [--out DIR] | ...)
    shows_error: bool = False  # a `$ ` example whose printed output is an error: its bad key is the point


def doc_files(root):
    files = [root / "README.md", root / "MODEL_ZOO.md", *sorted((root / "docs").glob("*.md"))]
    return [f for f in files if f.exists()]


def _blocks(lines):
    """Split markdown into (lang, first line number, lines) code blocks and (line number, text) prose lines."""
    blocks, prose, i = [], [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            prose.append((i + 1, lines[i]))
            i += 1
            continue
        fence, lang, body, start = m.group(1), m.group(2).lower(), [], i + 2
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i])
            i += 1
        blocks.append((lang, start, body))
        i += 1
    return blocks, prose


def _logical_lines(body, start):
    """(line number, text) of each command, joining lines that end in a backslash."""
    out, i = [], 0
    while i < len(body):
        first, text = start + i, body[i].rstrip()
        while text.endswith("\\") and i + 1 < len(body):
            i += 1
            text = text[:-1] + " " + body[i].strip()
        out.append((first, text.strip()))
        i += 1
    return out


def commands(path, root):
    rel = str(path.relative_to(root))
    blocks, prose = _blocks(path.read_text().splitlines())
    found = []
    for lang, start, body in blocks:
        lines = _logical_lines(body, start)
        dollar = [(k, n, t[2:].strip()) for k, (n, t) in enumerate(lines) if t.startswith("$ ")]
        if dollar:
            found += [Command(rel, n, t, True, k + 1 < len(lines) and lines[k + 1][1].startswith("error:"))
                      for k, n, t in dollar]
        elif lang in SHELL_LANGS:
            found += [Command(rel, n, t, True) for n, t in lines if t and not t.startswith("#")]
        elif lang in USAGE_LANGS:
            for n, t in lines:
                t = re.sub(r"^usage:\s*", "", t)
                if STARTERS.match(t):
                    found.append(Command(rel, n, t, False))
    for n, text in prose:
        for m in INLINE_CODE.finditer(text):
            if STARTERS.match(m.group(2).strip()):
                found.append(Command(rel, n, m.group(2).strip(), True))
    return found


def _tokens(text):
    lex = shlex.shlex(text, posix=True, punctuation_chars=True)
    lex.whitespace_split, lex.commenters = True, ""
    out = []
    for tok in lex:
        if tok.startswith("#"):  # a comment starts at a word, as in bash (shlex would cut words at any '#')
            break
        out.append(tok)
    return out


def simple_commands(text):
    """Token lists of the simple commands of one line (split at ; && || | and parentheses)."""
    cmds, cur = [], []
    for tok in _tokens(text):
        if tok and set(tok) <= set(";&|()<>"):
            cmds.append(cur)
            cur = []
        else:
            cur.append(tok.strip("[]|{}") if tok not in ("[", "]") else "")
    cmds.append(cur)
    return [[t for t in c if t] for c in cmds if any(c)]


def _is_python(tok):
    return re.fullmatch(r"(?:\S*/)?python3?(?:\.\d+)?", tok) is not None


def target(tokens):
    """(kind, script, args) for a command that runs a repository script or module, else None."""
    i = 0
    while i < len(tokens) and (re.fullmatch(r"[A-Za-z_]\w*=.*", tokens[i]) or tokens[i] in ("time", "exec", "env")):
        i += 1
    toks = tokens[i:]
    if not toks:
        return None
    head, rest = toks[0], toks[1:]
    if _is_python(head):
        j = 0
        while j < len(rest) and rest[j].startswith("-") and rest[j] not in ("-m", "-c"):
            j += 1
        if j >= len(rest) or rest[j] == "-c":
            return None
        if rest[j] == "-m":
            if j + 1 >= len(rest):
                return None
            module, args = rest[j + 1], rest[j + 2:]
            if module == "torch.distributed.run":
                return target(["torchrun", *args])
            if module == "pytest":
                return ("pytest", None, args)
            return ("module", module, args)
        return ("python", rest[j], rest[j + 1:])
    if re.fullmatch(r"(?:\S*/)?torchrun", head):
        for j, tok in enumerate(rest):
            if tok.endswith(".py"):
                return ("python", tok, rest[j + 1:])
        return None
    if head in ("bash", "sh"):
        if "-c" in rest:
            return None  # an inline script, not a file of the repository
        j = 0
        while j < len(rest) and rest[j].startswith("-"):
            j += 1
        return ("shell", rest[j], rest[j + 1:]) if j < len(rest) else None
    if head == "sbatch":
        for j, tok in enumerate(rest):
            if not tok.startswith("-"):
                return ("shell", tok, rest[j + 1:])
        return None
    if re.match(r"(?:\./)?scripts/", head):
        return ("python" if head.endswith(".py") else "shell", head, rest)
    return None


def long_flags(args):
    """The --flags of an argument list, up to a bare '--' (what follows belongs to another program)."""
    flags = []
    for tok in args:
        if tok == "--":
            break
        m = re.fullmatch(r"(--[A-Za-z][\w-]*)(=.*)?", tok)
        if m:
            flags.append(m.group(1))
    return flags


# Runs each script as __main__ with its ArgumentParser's parse methods replaced by a capture, so the parser
# is read without running the script: one process (one torch import) for all scripts.
_CAPTURE = r"""
import argparse, json, runpy, sys
class Found(Exception):
    pass
def capture(self, *args, **kwargs):
    raise Found(self)
argparse.ArgumentParser.parse_known_args = capture
argparse.ArgumentParser.parse_known_intermixed_args = capture
out = {}
for script in sys.argv[1:]:
    sys.argv = [script]
    try:
        runpy.run_path(script, run_name="__main__")
        out[script] = {"error": "it built no argparse parser"}
    except Found as e:
        out[script] = {"flags": sorted(o for a in e.args[0]._actions for o in a.option_strings)}
    except BaseException as e:
        out[script] = {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
print(json.dumps(out))
"""


_PARSER_CACHE = {}  # (root, script) -> (flags, error), so the tests of one session read each parser once


def parser_flags(root, scripts):
    """{script: (its parser's option strings, None) or (empty set, why they could not be read)}."""
    missing = [s for s in scripts if (str(root), s) not in _PARSER_CACHE]
    if missing:
        proc = subprocess.run([sys.executable, "-c", _CAPTURE, *missing], cwd=root, capture_output=True,
                              text=True, timeout=300)
        try:
            found = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            why = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            found = {s: {"error": f"the parser reader failed (exit {proc.returncode}): {why}"} for s in missing}
        for s, r in found.items():
            _PARSER_CACHE[str(root), s] = (set(r.get("flags", [])),
                                           r.get("error") and f"cannot read its parser: {r['error']}")
    return {s: _PARSER_CACHE[str(root), s] for s in scripts}


def _repo_path_tokens(root, args):
    """Arguments that name a file of the repository (a top-level folder of it and a source suffix)."""
    for tok in args:
        tok = tok.split("=", 1)[1] if re.match(r"--[\w-]+=", tok) else tok
        first = tok.split("/", 1)[0]
        placeholder = re.search(r"[A-Z*{}<>$]", tok)
        if ("/" in tok and not tok.startswith("/") and tok.endswith(PATH_SUFFIXES) and not placeholder
                and first not in (".", "..", "runs") and (root / first).is_dir()):
            yield tok


def command_problems(cmds, root, python_flags=True):
    """One line per problem: syntax errors, missing scripts, modules and files, unknown flags.

    python_flags=False skips the flags of Python scripts (reading their parsers takes a subprocess).
    """
    parsed, scripts = [], set()
    problems = []
    for c in cmds:
        where = f"{c.file}:{c.line}: `{c.text}`"
        if c.syntax:
            proc = subprocess.run(["bash", "-n", "-c", c.text], capture_output=True, text=True)
            if proc.returncode != 0:
                err = (proc.stderr.strip().splitlines() or ["?"])[0]
                problems.append(f"{where}: not valid shell: {err}")
                continue
        try:
            simple = simple_commands(c.text)
        except ValueError as e:
            problems.append(f"{where}: not valid shell: {e}")
            continue
        for tokens in simple:
            t = target(tokens)
            if t is None:
                continue
            parsed.append((where, t))
            if python_flags and t[0] == "python" and (root / t[1]).is_file():
                scripts.add(t[1])
    parsers = parser_flags(root, sorted(scripts))
    problems += sorted({f"{s}: {error}" for s, (_, error) in parsers.items() if error})
    for where, (kind, script, args) in parsed:
        if kind == "module":
            top = script.split(".")[0]
            if (root / top).is_dir():
                base = root / script.replace(".", "/")
                if not (base.with_suffix(".py").is_file() or (base / "__main__.py").is_file()):
                    problems.append(f"{where}: no module {script} in the repository")
        elif kind in ("python", "shell"):
            if re.search(r"[A-Z]{3,}", script) and not (root / script).exists():
                continue  # a placeholder such as SCRIPT.py
            if not (root / script).is_file():
                problems.append(f"{where}: {script} does not exist")
                continue
            if kind == "python":
                if script not in parsers:
                    continue
                known, error = parsers[script]
                if error:
                    continue  # reported once above
            else:
                text = (root / script).read_text()
                known = {f for f in long_flags(args) if re.search(rf"(?<![\w-]){re.escape(f)}(?![\w-])", text)}
            for flag in long_flags(args):
                if flag not in known:
                    problems.append(f"{where}: {script} has no flag {flag}")
        for tok in _repo_path_tokens(root, args):
            if not (root / tok).exists():
                problems.append(f"{where}: {tok} does not exist")
    return problems


def slug(heading):
    """GitHub's anchor for a heading: lower case, markup and punctuation removed, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path):
    blocks, prose = _blocks(path.read_text().splitlines())
    seen, out = {}, set()
    for _, text in prose:
        m = HEADING.match(text)
        if m:
            s = slug(m.group(2))
            out.add(s if s not in seen else f"{s}-{seen[s]}")
            seen[s] = seen.get(s, 0) + 1
    return out


def link_problems(path, root):
    rel = path.relative_to(root)
    _, prose = _blocks(path.read_text().splitlines())
    problems = []
    for n, text in prose:
        text = INLINE_CODE.sub("", text)
        targets = [m.group(1) for m in LINK.finditer(text)]
        m = REF_LINK.match(text)
        if m:
            targets.append(m.group(1))
        for t in targets:
            if re.match(r"^[a-z][a-z0-9+.-]*:", t, re.I):  # http:, https:, mailto:
                continue
            file_part, _, anchor = t.partition("#")
            dest = (path.parent / file_part).resolve() if file_part else path
            if not dest.exists():
                problems.append(f"{rel}:{n}: link {t} does not resolve ({file_part} is missing)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{rel}:{n}: link {t}: {dest.relative_to(root)} has no heading #{anchor}")
    return problems


def readme_problems(root):
    n = len((root / "README.md").read_text().splitlines())
    return [f"README.md has {n} lines, more than {README_MAX_LINES}: move detail into docs/"] \
        if n > README_MAX_LINES else []


CONFIG_SECTIONS = "model|norm|batch|optim|schedule|data|train|log|checkpoint"
CONFIG_KEY = re.compile(rf"^({CONFIG_SECTIONS})\.(\w+)(?:=.*)?$")
FILE_SUFFIX = re.compile(r"\.(py|sh|sbatch|yaml|yml|md|json|jsonl|pt|pth|csv|png)$")


def config_fields():
    """{section: its keys} of the repository's config schema."""
    import dataclasses

    from configs.schema import Config
    return {f.name: {g.name for g in dataclasses.fields(f.type)} for f in dataclasses.fields(Config)}


def config_key_problems(path, root, cmds, fields):
    """Config keys (`section.key`, `section.key=value`) in inline code and commands that the schema lacks."""
    rel = str(path.relative_to(root))
    _, prose = _blocks(path.read_text().splitlines())
    spans = [(n, m.group(2)) for n, text in prose for m in INLINE_CODE.finditer(text)]
    spans += [(c.line, c.text) for c in cmds if c.file == rel and not c.shows_error]
    problems = []
    for n, text in spans:
        for word in re.split(r"[\s/]+", text):
            m = CONFIG_KEY.match(word.strip("()[],;'\""))
            if m and not FILE_SUFFIX.search(m.group(0)) and m.group(2) not in fields[m.group(1)]:
                problems.append(f"{rel}:{n}: config key {m.group(1)}.{m.group(2)} is not in configs/schema.py")
    return problems


def all_problems(root, python_flags=True):
    files = doc_files(root)
    problems = readme_problems(root)
    cmds = [c for f in files for c in commands(f, root)]
    fields = config_fields()
    for f in files:
        problems += link_problems(f, root)
        problems += config_key_problems(f, root, cmds, fields)
    problems += command_problems(cmds, root, python_flags)
    return problems


def test_docs_links_and_commands_parse():
    """Links, README length, shell syntax, scripts, modules, files and shell-script flags: no subprocess per script."""
    problems = all_problems(ROOT, python_flags=False)
    assert not problems, "documentation problems:\n" + "\n".join(problems)


@pytest.mark.slow
def test_docs_python_flags():
    """Every --flag passed to a documented Python script exists in its argparse parser."""
    problems = all_problems(ROOT)
    assert not problems, "documentation problems:\n" + "\n".join(problems)


@pytest.mark.slow
def test_commands_are_found():
    """The extraction sees the README's two first commands and a Python script's flags."""
    found = [c.text for c in commands(ROOT / "README.md", ROOT)]
    assert "bash scripts/demo.sh" in " ".join(found) and "bash scripts/test.sh" in " ".join(found)
    flags, error = parser_flags(ROOT, ["train.py"])["train.py"]
    assert error is None and {"--config", "--dry-run"} <= flags


BAD_README = """# A project

See [the guide](docs/guide.md), [missing](docs/missing.md) and [no anchor](docs/guide.md#no-such-heading).
Run `python tool.py --good --fast` or `python eval.py ResNet50v1+SN(8,32)-76.92.pth`; `optim.lrr` is a typo.

```bash
python tool.py --good --bad
torchrun --nproc_per_node=2 tool.py --fast=1 && bash scripts/run.sh --slow
python missing.py --x
python tool.py 'unbalanced
python broken.py --x
```

```text
python tool.py [--good] [--worse X]
```

```
$ python tool.py --also-bad
error: whatever the output says
$ python tool.py norm.typo=1
error: the bad key is what this example shows
```
""" + "filler\n" * 150

GOOD_GUIDE = """# The guide

## Running `tool.py`, quickly

Back to [the README](../README.md#a-project) or [here](#running-toolpy-quickly).

```bash
OMP_NUM_THREADS=1 python tool.py --good --fast=2 configs/x.yaml  # a comment
python tool.py --good -- --bad   # after a bare -- the flags belong to another program
python tool.py optim.lr=0.2 train.epochs=1 batch.gpu=2
bash scripts/run.sh --fast
python -m pytest tests -m "not slow"
```
"""

TOOL = """import argparse
p = argparse.ArgumentParser()
p.add_argument("--good", action="store_true", help="a flag")
p.add_argument("--fast", help="another")
p.add_argument("rest", nargs="*")
p.parse_args()
"""


def test_checker_reports_bad_docs(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "scripts").mkdir()
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "x.yaml").write_text("{}\n")
    (tmp_path / "tool.py").write_text(TOOL)
    (tmp_path / "eval.py").write_text(TOOL)
    (tmp_path / "broken.py").write_text("import no_such_module\n")
    (tmp_path / "scripts" / "run.sh").write_text('case "$1" in\n  --fast) echo fast ;;\nesac\n')
    (tmp_path / "README.md").write_text(BAD_README)
    (tmp_path / "docs" / "guide.md").write_text(GOOD_GUIDE)
    problems = all_problems(tmp_path)
    text = "\n".join(problems)
    expected = [
        "README.md has 173 lines, more than 160",
        "README.md:4: config key optim.lrr is not in configs/schema.py",
        "docs/guide.md:10: config key batch.gpu is not in configs/schema.py",
        "README.md:3: link docs/missing.md does not resolve",
        "README.md:3: link docs/guide.md#no-such-heading: docs/guide.md has no heading #no-such-heading",
        "README.md:4: `python eval.py ResNet50v1+SN(8,32)-76.92.pth`: not valid shell",
        "README.md:7: `python tool.py --good --bad`: tool.py has no flag --bad",
        "README.md:8: `torchrun --nproc_per_node=2 tool.py --fast=1 && bash scripts/run.sh --slow`: "
        "scripts/run.sh has no flag --slow",
        "README.md:9: `python missing.py --x`: missing.py does not exist",
        "README.md:10: `python tool.py 'unbalanced`: not valid shell",
        "broken.py: cannot read its parser: ModuleNotFoundError: No module named 'no_such_module'",
        "README.md:15: `python tool.py [--good] [--worse X]`: tool.py has no flag --worse",
        "README.md:19: `python tool.py --also-bad`: tool.py has no flag --also-bad",
    ]
    for e in expected:
        assert e in text, f"missing {e!r} in:\n{text}"
    assert len(problems) == len(expected), text
    assert sum("guide.md" in p.split(":")[0] for p in problems) == 1, text


@pytest.mark.parametrize("heading, anchor", [
    ("Running `tool.py`, quickly", "running-toolpy-quickly"),
    ("The (g, b) setting", "the-g-b-setting"),
    ("Checkpoints and `final.json`", "checkpoints-and-finaljson"),
    ("snake_case name", "snake_case-name"),
])
def test_slug(heading, anchor):
    assert slug(heading) == anchor
