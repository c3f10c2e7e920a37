"""The table scripts/gpu_check.sh ends with: what ran, failed and was skipped, and the headline figures.

Markdown, from the parts' records (benchmarks/gpu_check.py) and the JSON files the parts wrote; a part
that failed or ran out of time shows whatever its JSON already holds. Standard library only.
"""
import json
import os
import re
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict

CORRECTNESS = ("tests", "race")
LINE = re.compile(r"^(tests/\S+?\.py)::\S+ (PASSED|FAILED|ERROR|SKIPPED|XFAIL|XPASS)\b(?: \((.*?)\))?", re.M)


def md_table(headers, rows):
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _load(path):
    if not path or not os.path.isfile(path):
        return None
    with open(path) as f:
        return json.load(f)


def _tail(path, lines=1):
    if not path or not os.path.isfile(path):
        return ""
    with open(path, errors="replace") as f:
        text = [line.rstrip() for line in f if line.strip()]
    return " / ".join(text[-lines:])


# ----- test results ------------------------------------------------------------------------------------
def junit_results(path):
    """[(file, outcome, name, reason)] of a pytest --junitxml file; outcome passed|failed|error|skipped."""
    out = []
    for case in ET.parse(path).getroot().iter("testcase"):
        module = [p for p in case.get("classname", "").split(".") if not p[:1].isupper()]
        where = "/".join(module) + ".py"
        outcome, reason = "passed", ""
        for tag in ("failure", "error", "skipped"):
            child = case.find(tag)
            if child is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                reason = (child.get("message") or "").splitlines()[0] if child.get("message") else ""
                break
        out.append((where, outcome, case.get("name"), reason))
    return out


def log_results(text):
    """The same from pytest -v lines (when it was stopped before writing the XML)."""
    names = {"PASSED": "passed", "FAILED": "failed", "ERROR": "error", "SKIPPED": "skipped", "XFAIL": "skipped",
             "XPASS": "passed"}
    return [(m.group(1), names[m.group(2)], "", m.group(3) or "") for m in LINE.finditer(text)]


def test_summary(results):
    """(one-line counts, per-file rows, failed names, skip reasons with counts)."""
    counts = Counter(r[1] for r in results)
    per_file = defaultdict(Counter)
    for where, outcome, _, _ in results:
        per_file[where][outcome] += 1
    line = ", ".join(f"{counts[k]} {k}" for k in ("passed", "failed", "error", "skipped") if counts[k]) or "no tests"
    rows = [[f, c["passed"], c["failed"] + c["error"], c["skipped"]] for f, c in sorted(per_file.items())]
    failed = [f"{w}::{n}" if n else w for w, o, n, _ in results if o in ("failed", "error")]
    skips = Counter(reason for _, o, _, reason in results if o == "skipped")
    return line, rows, failed, skips


def tests_outcome(record):
    """Results of the tests part, from its XML or else its log; None if neither says anything."""
    xml = os.path.join(os.path.dirname(record["log"]), "tests.xml") if record.get("log") else None
    if xml and os.path.isfile(xml):
        try:
            return junit_results(xml)
        except ET.ParseError:
            pass
    if record.get("log") and os.path.isfile(record["log"]):
        with open(record["log"], errors="replace") as f:
            return log_results(f.read())
    return None


def sanitizer_summary(text):
    """'N errors, M hazards' from compute-sanitizer's summary lines, or None without them."""
    errors = re.search(r"ERROR SUMMARY: (\d+) error", text)
    hazards = re.search(r"RACECHECK SUMMARY: (\d+) hazard", text)
    if not errors and not hazards:
        return None
    return ", ".join(x for x in (errors and f"{errors.group(1)} errors", hazards and f"{hazards.group(1)} hazards")
                     if x)


# ----- figures -----------------------------------------------------------------------------------------
def _f(value, fmt="{:.2f}"):
    return "-" if value is None else fmt.format(value)


def layers_rows(data):
    """Per (N, precision, layout): bn's ResNet-50 sum and every variant's ratio to it and floor fraction."""
    rows = []
    for run in data["layers"]["runs"]:
        total, ratio, floor = run.get("total_s", {}), run.get("total_ratio_to_bn", {}), run.get(
            "total_bandwidth_fraction", {})
        worst = run.get("max_ratio_to_bn", {})
        for v in data["layers"]["variants"]:
            rows.append([f"{run['batch']} {run['precision']} {run['layout']}", v,
                         _f(total[v] * 1e3 if v in total else None, "{:.3f}"),
                         "1.00" if v == "bn" and v in total else _f(ratio.get(v)),
                         _f(100 * floor[v] if v in floor else None, "{:.0f}%"),
                         _f(worst[v]["ratio"] if v in worst else None)])
    return rows


def compile_rows(data, cold=()):
    """Per (batch, variant): eager and compiled ms, ratios to bn, speedup, compile s, images/s and memory.

    cold: the JSON of the cold runs (the same runs once, beside the correctness parts), for their compile s.
    """
    cold_runs = {r["batch"]: r for c in cold if c for r in c.get("compile", {}).get("runs", [])}
    rows = []
    for run in data["compile"]["runs"]:
        bn_mem = run["variants"].get("bn", {}).get("eager", {}).get("peak_memory_bytes")
        for v, modes in run["variants"].items():
            e, c = modes.get("eager", {}), modes.get("compiled", {})
            cold_c = cold_runs.get(run["batch"], {}).get("variants", {}).get(v, {}).get("compiled", {})
            mem = e.get("peak_memory_bytes")
            rows.append([run["batch"], v, _f(e.get("median_s") and e["median_s"] * 1e3, "{:.1f}"),
                         _f(c.get("median_s") and c["median_s"] * 1e3, "{:.1f}"),
                         "1.00" if v == "bn" and "median_s" in e else _f(e.get("step_ratio_to_bn")),
                         "1.00" if v == "bn" and "median_s" in c else _f(c.get("step_ratio_to_bn")),
                         _f(modes.get("compiled_speedup")),
                         f"{_f(cold_c.get('compile_s'), '{:.0f}')} / {_f(c.get('compile_s'), '{:.0f}')}",
                         "?" if c.get("graph_breaks") is None else c["graph_breaks"],
                         f"{_f(e.get('images_per_s'), '{:.0f}')} / {_f(c.get('images_per_s'), '{:.0f}')}",
                         _f(mem / 2**30 if mem is not None else None),
                         _f(mem / bn_mem if mem is not None and bn_mem else None)])
    return rows


def compile_errors(data):
    """Lines naming every (batch, variant, mode) that failed, with its error."""
    lines = [f"- {run['batch']} per GPU, {v} {m}: {rec['error']}" for run in data["compile"]["runs"]
             for v, modes in run["variants"].items() for m, rec in modes.items()
             if isinstance(rec, dict) and "error" in rec]
    return "\n\nFailed:\n" + "\n".join(lines) if lines else ""


def layers_errors(data):
    """One line per (run, variant) that failed at some shape: the first error."""
    lines = []
    for run in data["layers"]["runs"]:
        first = {}
        for shape in run["shapes"]:
            for v, error in shape.get("errors", {}).items():
                first.setdefault(v, (shape["shape"], error))
        lines += [f"- N={run['batch']} {run['precision']} {run['layout']}, {v} at {shape}: {error}"
                  for v, (shape, error) in first.items()]
    return "\n\nFailed:\n" + "\n".join(lines) if lines else ""


def self_check_lines(datas):
    """One line per distinct failed self-check recorded in any part's JSON; empty when none failed."""
    failed = {}
    for data in datas:
        for rec in (data or {}).get("kernel_self_checks", []) if isinstance(data, dict) else []:
            if rec.get("error") is not None:
                key = tuple(str(rec.get(k)) for k in ("layer", "backend", "device", "dtype", "layout"))
                failed.setdefault(key, rec["error"])
    return "\n".join(f"- {' '.join(key)}: {error}" for key, error in failed.items())


def pipeline_rows(data):
    p = data["pipeline"]
    rows = [[f"CPU, {r['workers']} workers", _f(r.get("images_per_s"), "{:.0f}")] for r in p["cpu"]]
    g = p["gpu"]
    rows.append(["nvJPEG decode + GPU augment", _f(g.get("images_per_s"), "{:.0f}") if g.get("images_per_s")
                 else g.get("error") or g.get("note") or "-"])
    return rows


def trainer_row(batch, data):
    """train.py and the plain loop at one batch: images/s, their ratio and the trainer's overhead in %."""
    programs = data["trainer"]["programs"]
    t, p = programs["trainer"]["images_per_s"], programs["plain"]["images_per_s"]
    return [batch, f"{t:.0f}", f"{p:.0f}", f"{t / p:.3f}", f"{100 * (p / t - 1):+.1f}%"]


def syncs_rows(data):
    return [[r["batch"], r["steps_counted"], r["total"], _f(r["per_step_mean"]), r["per_step_max"],
             "; ".join(r["messages"][:1]) or "-"] for r in data["runs"]]


def figures(records):
    """Markdown blocks of every figure whose JSON exists; a block that cannot be read says why."""
    by = {r["name"]: r for r in records}
    blocks = []

    def block(title, build):
        try:
            text = build()
        except (KeyError, TypeError, ValueError, ZeroDivisionError, json.JSONDecodeError) as error:
            text = f"could not read the results: {type(error).__name__}: {error}"
        if text:
            blocks.append(f"### {title}\n\n{text}")

    def data(name):
        return _load(by.get(name, {}).get("json"))

    block("Norm layers, ResNet-50 sum of forward+backward (ms; % of the memory-traffic floor)", lambda: (
        md_table(["N precision layout", "variant", "sum ms", "vs bn", "floor", "worst layer vs bn"],
                 layers_rows(data("layers"))) + layers_errors(data("layers")) if data("layers") else ""))
    cold = [data(n) for n in by if n.startswith("compile-cold")]
    timed = data("compile")
    if not (timed and timed["compile"]["runs"]) and any(c and c["compile"]["runs"] for c in cold):
        # the timed part did not finish a batch size: the cold runs' single repeats are all there is
        timed = {"compile": {"runs": [r for c in cold if c for r in c["compile"]["runs"]]}}
        title = "ResNet-50 training step, eager and torch.compile: cold runs only, 1 repeat (compile s: cold)"
    else:
        title = "ResNet-50 training step, eager and torch.compile (compile s: cold run / timed run)"
    block(title, lambda: (
        md_table(["per GPU", "variant", "eager ms", "compiled ms", "eager vs bn", "compiled vs bn",
                  "compiled speedup", "compile s", "graph breaks", "images/s eager / compiled", "peak GiB (eager)",
                  "memory vs bn"], compile_rows(timed, cold)) + compile_errors(timed)
        if timed and timed["compile"]["runs"] else ""))
    block("Kernel self-checks that failed (the reference ran instead)", lambda: self_check_lines(
        [data(r["name"]) for r in records]))
    block("Input pipeline (images/s)", lambda: md_table(["path", "images/s"], pipeline_rows(data("pipeline")))
          if data("pipeline") else "")
    block("Trainer against a plain loop (BN, one round; overhead: plain / trainer - 1)", lambda: md_table(
        ["per GPU", "train.py images/s", "plain images/s", "trainer / plain", "overhead"],
        [trainer_row(b, data(f"trainer-{b}")) for b in (32, 256) if data(f"trainer-{b}")])
        if any(data(f"trainer-{b}") for b in (32, 256)) else "")
    block("Host synchronizations per train.py step between print steps", lambda: md_table(
        ["per GPU", "steps counted", "total", "per step", "max per step", "first message"],
        syncs_rows(data("syncs"))) if data("syncs") else "")
    return blocks


# ----- the report --------------------------------------------------------------------------------------
def part_result(record):
    """One cell: what the part found, or why it did not run."""
    if record["status"] == "skipped":
        return record["reason"]
    if record["name"] == "tests":
        results = tests_outcome(record)
        line = test_summary(results)[0] if results else "no results"
        return line + (" (stopped at the time limit)" if record["status"] == "timeout" else "")
    if record["name"] == "race":
        text = open(record["log"], errors="replace").read() if os.path.isfile(record["log"]) else ""
        found = sanitizer_summary(text)
        if found:
            return found
    if record["status"] == "stopped":
        return "stopped when the timed benchmarks began (it runs only beside the correctness parts)"
    if record["status"] == "timeout":
        return f"stopped at its {record['limit_s']} s limit; partial results kept; log {record['log']}"
    if record["status"] == "failed":
        return f"exit {record.get('returncode')}: {_tail(record['log'])[-200:]}"
    return "ok"


def _seconds(record):
    limit = record.get("limit_s") or record.get("budget_s") or "-"
    return f"{record['seconds']:.0f} / {limit}" if "seconds" in record else f"- / {limit}"


def verdict(records):
    """(last line, exit code): 1 when a correctness part failed or timed out."""
    bad = [r["name"] for r in records if r["name"] in CORRECTNESS and r["status"] in ("failed", "timeout",
                                                                                     "interrupted")]
    unchecked = [r["name"] for r in records if r["name"] in CORRECTNESS and r["status"] == "skipped"]
    if bad:
        return f"**correctness: FAILED** ({', '.join(bad)}); exit code 1", 1
    if unchecked:
        return (f"**correctness: passed, but {', '.join(unchecked)} did not run** (see the reasons above); "
                "exit code 0"), 0
    return "**correctness: passed**; exit code 0", 0


def header(env, seconds, total, bench_env=None):
    """The title line: GPU, versions, time used; commit and date from a benchmark's JSON when one ran."""
    gpu = env.get("gpu") or "no GPU"
    memory = f", {env['gpu_memory_bytes'] / 2**30:.0f} GiB" if env.get("gpu_memory_bytes") else ""
    line = (f"## GPU check: {gpu}{memory} (sm {env.get('capability')}), torch {env.get('torch')} (CUDA "
            f"{env.get('cuda_build')}); {seconds:.0f} s of the {total} s budget")
    if bench_env:
        line += (f"; commit {bench_env.get('git_commit') or 'unknown (no git)'}, triton {bench_env.get('triton')}, "
                 f"{bench_env.get('date')}")
    return line


def benchmark_environment(records):
    """The "environment" of the first benchmark JSON that has one (report.environment's record)."""
    for record in records:
        data = _load(record.get("json")) if record.get("kind") == "benchmark" else None
        if isinstance(data, dict) and "environment" in data:
            return data["environment"]
    return None


def render(records, env, out, seconds, total):
    """(markdown, exit code) of a whole check."""
    text = [header(env, seconds, total, benchmark_environment(records)), ""]
    missing = [m for m, ok in (env.get("packages") or {}).items() if not ok]
    if missing:
        text.append(f"Not importable here: {', '.join(missing)}.\n")
    for block in figures(records):
        text += [block, ""]
    tests = next((r for r in records if r["name"] == "tests" and r["status"] != "skipped"), None)
    results = tests_outcome(tests) if tests else None
    if results:
        _, rows, failed, skips = test_summary(results)
        text += ["### Tests on CUDA by file", "", md_table(["file", "passed", "failed", "skipped"], rows), ""]
        if failed:
            text += ["Failed: " + ", ".join(failed[:10]) + (f" and {len(failed) - 10} more" if len(failed) > 10
                                                            else ""), ""]
        if skips:
            text += ["Skipped: " + "; ".join(f"{n} x {reason or 'no reason given'}" for reason, n in
                                             skips.most_common(5)), ""]
    rows = [[r["name"], r["kind"], r["status"], _seconds(r), part_result(r)] for r in records]
    text += [f"### Parts (outputs in {out})", "", md_table(["part", "kind", "status", "s / limit", "result"], rows),
             ""]
    line, code = verdict(records)
    text.append(line)
    return "\n".join(text), code
