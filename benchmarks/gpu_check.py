"""The GPU check behind scripts/gpu_check.sh: the CUDA correctness tests, a race check and the headline
benchmarks, each a subprocess under its own time limit inside one total budget, then one table.

Only the standard library is imported here, so that whatever a part does (a crash, a hang, a missing
package) the driver still ends with the table (benchmarks/gpu_report.py) of what ran, failed and was
skipped, and why. Outputs: <out>/<part>.log and <part>.json, env.json, parts.json, report.md.
"""
import argparse
import dataclasses
import glob
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

from . import gpu_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOTAL_S = 480          # the whole check, report included: 8 minutes
RESERVE_S = 10         # kept back for the report
MIN_PART_S = 15        # a part that would get less is skipped
OPTIONAL = ("pytest", "tensorboardX", "yaml", "torchvision", "PIL", "numpy", "triton")
# test_triton_compile.py compiles every kernel for sm_90 without a GPU: here the kernels run for real instead.
NOT_ON_GPU = {"tests/norms/test_triton_compile.py"}


@dataclasses.dataclass
class Part:
    """One step of the check: a command, its time limit, what it needs and where its results go."""
    name: str
    kind: str                     # correctness | benchmark
    budget_s: int
    argv: list
    what: str                     # one line for the plan and the table
    json: str = None              # the JSON file the command writes, if any
    env: dict = dataclasses.field(default_factory=dict)
    needs: list = dataclasses.field(default_factory=list)  # modules the command imports beyond torch
    skip: str = None              # why it is skipped, decided before it runs


def sanitizer():
    """compute-sanitizer's path: $COMPUTE_SANITIZER_BIN, PATH, /usr/local/cuda*/bin (newest last); None if absent."""
    candidates = [os.environ.get("COMPUTE_SANITIZER_BIN"), shutil.which("compute-sanitizer")]
    candidates += sorted(glob.glob("/usr/local/cuda*/bin/compute-sanitizer"), reverse=True)
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


def importable(python, modules):
    """{module: whether `python -c "import module"` succeeds} (a broken install counts as missing), in one
    process."""
    code = ("import importlib, json, sys\nfound = {}\nfor m in sys.argv[1:]:\n    try:\n"
            "        importlib.import_module(m)\n        found[m] = True\n    except Exception:\n"
            "        found[m] = False\nprint(json.dumps(found))")
    try:
        done = subprocess.run([python, "-c", code, *modules], cwd=REPO, capture_output=True, text=True,
                              timeout=180)
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return dict.fromkeys(modules, False)


def test_files():
    """The test files the correctness part runs, relative to the repository: those of tests/norms that run on
    the GPU where there is one (they use DEVICE, ON_GPU, the tk fixture or CUDA) and every test file that
    skips without CUDA."""
    on_gpu = re.compile(r"\b(DEVICE|ON_GPU|tk)\b|cuda")
    cuda_only = re.compile(r"skipif\(not torch\.cuda\.is_available\(\)")
    found = []
    for path in sorted(glob.glob(os.path.join(REPO, "tests", "**", "test_*.py"), recursive=True)):
        rel = os.path.relpath(path, REPO)
        with open(path) as f:
            source = f.read()
        norms_gpu = rel.startswith(os.path.join("tests", "norms", "")) and on_gpu.search(source)
        if rel not in NOT_ON_GPU and (norms_gpu or cuda_only.search(source)):
            found.append(rel)
    return found


DATA = ["yaml", "torchvision", "PIL", "numpy"]  # what the data-reading parts import


def plan(python, out, cache, have, sanitizer_path):
    """The parts in the order they run. have: {module: importable}; sanitizer_path: None when absent."""
    bench = [python, os.path.join("scripts", "benchmark.py"), "--device", "cuda", "--cache-dir", cache]
    tb = "true" if have.get("tensorboardX") else "false"

    def j(name):
        return os.path.join(out, f"{name}.json")
    pytest = [python, "-m", "pytest", "-v", "-rs", "-p", "no:cacheprovider",
              f"--junitxml={os.path.join(out, 'tests.xml')}"]
    compile_run = ["--what", "compile", "--compile-batch", "32,256", "--compile-variants", "bn,sn-fused,gn-fused",
                   "--compile-precision", "bf16", "--compile-layout", "channels_last"]
    parts = [
        Part("tests", "correctness", 180, pytest + test_files(),
             "the kernel tests on CUDA (tests/norms files that run on the GPU) and the CUDA-only tests",
             needs=["pytest", "numpy", "PIL"]),
        Part("race", "correctness", 45,
             [sanitizer_path or "compute-sanitizer", "--tool", "racecheck", "--racecheck-report", "all",
              "--error-exitcode", "1", "--print-limit", "20", python, "-m", "benchmarks.race_shapes",
              "--json", j("race")],
             "compute-sanitizer racecheck of the fused SN and GN kernels on small shapes", j("race"),
             needs=["triton"], skip=None if sanitizer_path else "compute-sanitizer not found "
             "($COMPUTE_SANITIZER_BIN, PATH, /usr/local/cuda*/bin)"),
        Part("layers", "benchmark", 45,
             bench + ["--what", "layers", "--layer-batch", "32,256", "--precision", "bf16", "--layout",
                      "channels_last", "--json", j("layers")],
             "per-layer forward+backward at ResNet-50's norm shapes, 32 and 256 per GPU, bf16 channels_last",
             j("layers")),
        Part("compile", "benchmark", 150, bench + compile_run + ["--json", j("compile")],
             "ResNet-50 training step, eager and torch.compile, 32 and 256 per GPU, bf16 channels_last",
             j("compile")),
        Part("pipeline", "benchmark", 40, bench + ["--what", "pipeline", "--json", j("pipeline")],
             "input pipeline: CPU loader workers and nvJPEG decode + GPU augmentation", j("pipeline"),
             needs=DATA[1:]),
        Part("syncs", "benchmark", 40,
             [python, "-m", "benchmarks.host_syncs", "--device", "cuda", "--batch", "32,256", "--tensorboard", tb,
              "--cache-dir", cache, "--json", j("syncs")],
             "host synchronizations per train.py step between print steps (BN, 32 and 256 per GPU)",
             j("syncs"), needs=DATA),
    ]
    for batch in (32, 256):
        parts.append(Part(
            f"trainer-{batch}", "benchmark", 45 if batch == 32 else 50,
            bench + ["--what", "trainer", "--trainer-world", "1", "--trainer-batch", str(batch),
                     "--trainer-rounds", "1", "--trainer-tensorboard", tb, "--json", j(f"trainer-{batch}")],
            f"train.py against a plain loop, BN, {batch} per GPU, one round", j(f"trainer-{batch}"), needs=DATA))
    for part in parts:
        missing = [m for m in part.needs if not have.get(m)]
        if part.skip is None and missing:
            part.skip = f"needs {', '.join(missing)}: not importable with {python}"
            if missing == ["pytest"]:
                part.skip = ("pytest is not installed (python -c 'import pytest' failed); this check installs "
                             "nothing")
    return parts, compile_run


# the two cold compile runs leave half the cores to the tests (inductor's cache keys ignore the thread count)
COMPILE_THREADS = {"TORCHINDUCTOR_COMPILE_THREADS": "4"}


def background_parts(python, out, cache, compile_run):
    """Run beside the correctness parts, stopped before the first timed benchmark: the generated data sets,
    and the compile part's run once per batch size (repeats 1, two processes), so that the timed compile
    part finds inductor's caches warm."""
    prepare = [python, "-m", "benchmarks.gpu_check", "--prepare", "--cache-dir", cache]
    parts = [Part("prepare", "background", 0, prepare, "generate the PNG and JPEG folders the benchmarks read")]
    batches = compile_run.index("--compile-batch") + 1
    for batch in compile_run[batches].split(","):
        run = compile_run[:batches] + [batch] + compile_run[batches + 1:]
        json_path = os.path.join(out, f"compile-cold-{batch}.json")
        parts.append(Part(f"compile-cold-{batch}", "background", 0,
                          [python, os.path.join("scripts", "benchmark.py"), "--device", "cuda", "--cache-dir", cache,
                           *run, "--repeats", "1", "--warmup", "1", "--json", json_path],
                          f"the compile part's run at {batch} per GPU once, cold caches (compile times)", json_path,
                          env=COMPILE_THREADS))
    return parts


def prepare(cache):
    """Generate (or find in the cache) the folders of the pipeline and trainer parts."""
    from . import cli, pipeline, trainer
    d = cli.DEFAULTS["cuda"]
    pipeline.jpeg_folder(cache, d["pipeline_images"], d["pipeline_unique"])
    for batch in (32, 256):
        trainer.png_folder(cache, batch * d["trainer_steps"], d["trainer_size"])


def environment(cache):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # the kernels run for real here
    env.update(PYTHONPATH=os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p),
               PYTHONUNBUFFERED="1", TORCHINDUCTOR_CACHE_DIR=os.path.join(cache, "inductor"),
               TRITON_CACHE_DIR=os.path.join(cache, "triton"))
    return env


def _stop(proc, grace=10):
    """SIGTERM to the part's process group, SIGKILL after `grace` seconds."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def start(part, env, log_path):
    """Popen of the part in a session of its own (so that a stop reaches its children), output to log_path."""
    stale = [part.json, os.path.join(os.path.dirname(log_path), "tests.xml") if part.name == "tests" else None]
    for path in stale:  # an earlier check's results in the same folder must not pass for this one's
        if path and os.path.exists(path):
            os.remove(path)
    log = open(log_path, "w")
    log.write("$ " + " ".join(part.argv) + "\n")
    log.flush()
    proc = subprocess.Popen(part.argv, cwd=REPO, env={**env, **part.env}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log, proc.began = log, time.monotonic()
    return proc


def run_part(part, env, out, limit, record):
    """Run one part for at most `limit` seconds, filling `record` (already in the report's list, so that a
    check interrupted meanwhile still reports the part)."""
    log_path = os.path.join(out, f"{part.name}.log")
    record.update(name=part.name, kind=part.kind, what=part.what, budget_s=part.budget_s, limit_s=limit,
                  log=log_path, json=part.json, command=part.argv, status="running")
    began = time.monotonic()
    proc = start(part, env, log_path)
    try:
        code = proc.wait(limit)
        record.update(status="passed" if code == 0 else "failed", returncode=code)
    except subprocess.TimeoutExpired:
        _stop(proc)
        record.update(status="timeout", returncode=None)
    except BaseException:  # SIGTERM or Ctrl-C of the check: the part runs in a session of its own
        _stop(proc)
        record.update(status="interrupted", returncode=None)
        raise
    finally:
        proc.log.close()
        record["seconds"] = time.monotonic() - began
    return record


def parser():
    p = argparse.ArgumentParser(prog="scripts/gpu_check.sh", description="On one CUDA GPU: the kernel tests on "
                                "CUDA, a compute-sanitizer race check and the headline benchmarks, each under a time "
                                f"limit within {TOTAL_S} s; ends with a table. Exit 0: every correctness part passed "
                                "(or was skipped, as the table says); 1: one failed or timed out; 2: bad usage or no "
                                "CUDA.")
    p.add_argument("--dry-run", action="store_true", help="print the plan (commands and time limits) and exit; "
                   "needs no GPU (also GPU_CHECK_DRY=1)")
    p.add_argument("--out", default=os.environ.get("OUT") or os.path.join(os.getcwd(), "gpu_check_out"),
                   help="output folder (default $OUT, else ./gpu_check_out)")
    p.add_argument("--only", help="comma-separated parts to run (the others are reported as skipped)")
    p.add_argument("--skip", help="comma-separated parts not to run")
    p.add_argument("--total", type=int, default=int(os.environ.get("GPU_CHECK_TOTAL", TOTAL_S)),
                   help=f"total seconds (default {TOTAL_S}, or $GPU_CHECK_TOTAL)")
    p.add_argument("--cache-dir", default=os.environ.get("GPU_CHECK_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "sn-benchmark"),
        help="generated data and compile caches (default ~/.cache/sn-benchmark, or $GPU_CHECK_CACHE)")
    p.add_argument("--prepare", action="store_true", help=argparse.SUPPRESS)  # the background data part
    return p


def probe(python):
    """(environment dict, None) from a subprocess that imports torch, or (None, the reason it could not)."""
    code = ("import json, torch; c = torch.cuda.is_available(); p = torch.cuda.get_device_properties(0) if c "
            "else None; print(json.dumps({'torch': torch.__version__, 'cuda_build': torch.version.cuda, "
            "'cuda_available': c, 'device_count': torch.cuda.device_count() if c else 0, "
            "'gpu': p.name if p else None, 'capability': f'{p.major}.{p.minor}' if p else None, "
            "'gpu_memory_bytes': p.total_memory if p else None}))")
    try:
        done = subprocess.run([python, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=180)
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{type(error).__name__}: {error}"
    if done.returncode:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), None


def selected(parts, args):
    """The parts, those left out by --only/--skip marked skipped."""
    only = set(args.only.split(",")) if args.only else None
    for part in parts:
        if part.skip is None and ((only is not None and part.name not in only)
                                  or (args.skip and part.name in args.skip.split(","))):
            part.skip = "not selected (--only/--skip)"
    return parts


def budgets(parts):
    """Per-part budgets from $GPU_CHECK_BUDGET_<PART> (e.g. GPU_CHECK_BUDGET_COMPILE=300), else the defaults."""
    for part in parts:
        name = "GPU_CHECK_BUDGET_" + re.sub(r"\W", "_", part.name).upper()
        value = os.environ.get(name)
        if value:
            if not value.isdigit() or int(value) < 1:
                raise ValueError(f"{name}={value!r}: give a whole number of seconds >= 1")
            part.budget_s = int(value)
    return parts


def print_plan(parts, background, total, out):
    print(f"gpu_check plan: {total} s in all (each part gets its time limit or what is left, whichever is less); "
          f"outputs in {out}")
    for i, part in enumerate(parts, 1):
        print(f"[{i}] {part.name} ({part.kind}, time limit {part.budget_s} s): {part.what}")
        if part.skip:
            print(f"    skipped: {part.skip}")
        print("    $ " + " ".join(_quote(a) for a in part.argv))
    for part in background:
        until = "waited for" if part.name == "prepare" else "stopped"
        print(f"[background] {part.name}: {part.what}; {until} when the first benchmark starts")
        print("    $ " + " ".join(_quote(a) for a in part.argv))


def _quote(arg):
    return arg if re.fullmatch(r"[\w./=:,+-]+", arg) else "'" + arg.replace("'", "'\\''") + "'"


def main(argv=None):
    began = time.monotonic()  # the probes below count against the total too
    args = parser().parse_args(argv)
    if args.prepare:
        prepare(args.cache_dir)
        return 0
    python = sys.executable
    dry = args.dry_run or os.environ.get("GPU_CHECK_DRY") == "1"
    if args.total < 60:
        print(f"gpu_check: --total {args.total} is under 60 s; give at least 60", file=sys.stderr)
        return 2
    out = os.path.abspath(args.out)
    names = [p.name for p in plan(python, out, args.cache_dir, {}, None)[0]]
    for option in ("only", "skip"):
        unknown = sorted(set((getattr(args, option) or "").split(",")) - set(names) - {""})
        if unknown:
            print(f"gpu_check: --{option} {getattr(args, option)}: unknown part(s) {', '.join(unknown)}; parts: "
                  f"{', '.join(names)}", file=sys.stderr)
            return 2
    env_info, why = (None, None) if dry else probe(python)
    if not dry:
        if env_info is None:
            print(f"gpu_check: cannot import torch with {python} ({why}); run it where torch is installed")
            return 2
        if not env_info["cuda_available"]:
            print(f"gpu_check: no CUDA device (torch.cuda.is_available() is False with torch {env_info['torch']}); "
                  "run it on a machine with a GPU, or --dry-run to print the plan")
            return 2
    have = importable(python, OPTIONAL)
    parts, compile_run = plan(python, out, args.cache_dir, have, sanitizer())
    try:
        parts = selected(budgets(parts), args)
    except ValueError as error:
        print(f"gpu_check: {error}", file=sys.stderr)
        return 2
    background = background_parts(python, out, args.cache_dir, compile_run)
    if "compile" not in [p.name for p in parts if not p.skip]:
        background = [p for p in background if not p.name.startswith("compile-cold")]
    if dry:
        print_plan(parts, background, args.total, out)
        return 0
    return execute(parts, background, args, out, {**env_info, "packages": have, "sanitizer": sanitizer()}, began)


def execute(parts, background, args, out, env_info, began=None):
    began = time.monotonic() if began is None else began
    deadline = began + args.total - RESERVE_S
    os.makedirs(out, exist_ok=True)
    env = environment(args.cache_dir)
    os.makedirs(args.cache_dir, exist_ok=True)
    with open(os.path.join(out, "env.json"), "w") as f:
        json.dump(env_info, f, indent=1)
    records, running = [], {}
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    try:
        for part in background:
            running[part.name] = start(part, env, os.path.join(out, f"{part.name}.log"))
        for part in parts:
            left = deadline - time.monotonic()
            if part.skip is None and part.kind == "benchmark" and running:
                left = _end_background(running, background, records, out, deadline)
            if part.skip is not None:
                records.append({"name": part.name, "kind": part.kind, "what": part.what, "status": "skipped",
                                "reason": part.skip, "budget_s": part.budget_s, "json": part.json})
                continue
            if left < MIN_PART_S:
                records.append({"name": part.name, "kind": part.kind, "what": part.what, "status": "skipped",
                                "reason": f"no time left in the {args.total} s budget", "budget_s": part.budget_s,
                                "json": part.json})
                continue
            print(f"gpu_check: [{time.monotonic() - began:4.0f} s] {part.name}: {part.what} "
                  f"(limit {min(part.budget_s, int(left))} s)", flush=True)
            records.append({})
            run_part(part, env, out, min(part.budget_s, int(left)), records[-1])
            print(f"gpu_check: [{time.monotonic() - began:4.0f} s] {part.name}: {records[-1]['status']}", flush=True)
    finally:
        _end_background(running, background, records, out, time.monotonic())
        signal.signal(signal.SIGTERM, previous)
        with open(os.path.join(out, "parts.json"), "w") as f:
            json.dump({"total_s": args.total, "seconds": time.monotonic() - began, "parts": records}, f, indent=1)
        try:
            text, code = gpu_report.render(records, env_info, out, time.monotonic() - began, args.total)
        except Exception as error:  # the table must come: the bare statuses, and why the rest is missing
            text = "\n".join([f"report failed ({type(error).__name__}: {error}); the parts:"]
                              + [f"  {r.get('name')}: {r.get('status')} {r.get('reason', '')}" for r in records])
            code = gpu_report.verdict(records)[1]
        with open(os.path.join(out, "report.md"), "w") as f:
            f.write(text + "\n")
        print("\n" + text, flush=True)
    return code


def _end_background(running, background, records, out, deadline):
    """Wait for the background parts until `deadline` (the data they generate is needed), then stop them;
    returns the seconds left."""
    by_name = {p.name: p for p in background}
    for name, proc in list(running.items()):
        part = by_name[name]
        # the data must be complete before a benchmark reads it; the cold compile run may be cut short
        wait = max(0.0, deadline - time.monotonic()) if name == "prepare" else 0.0
        try:
            code = proc.wait(wait)
            status = "passed" if code == 0 else "failed"
        except subprocess.TimeoutExpired:
            _stop(proc)
            code, status = None, "stopped"
        proc.log.close()
        records.append({"name": name, "kind": "background", "what": part.what, "status": status,
                        "returncode": code, "log": os.path.join(out, f"{name}.log"), "json": part.json,
                        "seconds": time.monotonic() - proc.began})
        del running[name]
    return deadline - time.monotonic()


if __name__ == "__main__":
    sys.exit(main())
