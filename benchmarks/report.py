"""What the run was measured on, and the printed tables."""
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess

import torch


def _version(package):
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit():
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    if commit.returncode:
        return None
    return commit.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def environment(device):
    """Device, versions, threads and date, for the header and the JSON."""
    env = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": str(device), "python": platform.python_version(), "torch": torch.__version__,
           "torchvision": _version("torchvision"), "triton": _version("triton"), "git_commit": _git_commit(),
           "cpu": _cpu_name(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"), "GLIBC_TUNABLES": os.environ.get("GLIBC_TUNABLES")}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_bytes=props.total_memory, capability=f"{props.major}.{props.minor}",
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                   cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    return env


def header(env):
    where = f"{env['gpu']} (CUDA {env['cuda']}, cuDNN {env['cudnn']})" if "gpu" in env else f"CPU {env['cpu']}"
    return (f"device {env['device']}: {where}; torch {env['torch']}, torchvision {env['torchvision']}, "
            f"triton {env['triton']}; {env['torch_threads']} torch threads (OMP_NUM_THREADS="
            f"{env['OMP_NUM_THREADS']}), {env['cpu_count']} CPUs; {env['date']}; commit {env['git_commit']}")


def table(headers, rows):
    """Plain-text table, first column left-aligned, the others right-aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for row in cells:
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _ms(seconds):
    return f"{seconds * 1e3:.3f}" if seconds < 0.01 else f"{seconds * 1e3:.1f}"


def layers_text(section):
    rate = section["copy"]["bytes_per_s"]
    out = [f"Norm layers, forward+backward (training mode), median of {section['repeats']} interleaved repeats; "
           f"ms (and % of the memory-traffic floor: 8 passes over the activation at the measured "
           f"{rate / 1e9:.1f} GB/s copy rate). bf16 = bf16 activations under torch.autocast."]
    for run in section["runs"]:
        variants = [v for v in section["variants"] if any(v in r["median_s"] for r in run["shapes"])]
        others = [v for v in variants if v != "bn"]
        headers = ["shape (C x H x W)", "layers"] + variants + [f"{v}/bn" for v in others]
        rows = []
        for r in run["shapes"]:
            cells = [f"{_ms(r['median_s'][v])} ({100 * r['bandwidth_fraction'][v]:.0f}%)" if v in r["median_s"]
                     else "failed" for v in variants]
            ratios = [f"{r['ratio_to_bn'][v]:.2f}" if v in r.get("ratio_to_bn", {}) else "-" for v in others]
            rows.append(["x".join(map(str, r["shape"][1:])), r["count"]] + cells + ratios)
        total, tr = run.get("total_s", {}), run.get("total_ratio_to_bn", {})
        frac = run.get("total_bandwidth_fraction", {})
        rows.append(["ResNet-50 sum", sum(r["count"] for r in run["shapes"])]
                    + [f"{_ms(total[v])} ({100 * frac[v]:.0f}%)" if v in total else "-" for v in variants]
                    + [f"{tr[v]:.2f}" if v in tr else "-" for v in others])
        worst = run.get("max_ratio_to_bn", {})
        rows.append(["max per-layer ratio", ""] + [""] * len(variants)
                    + [f"{worst[v]['ratio']:.2f}" if v in worst else "-" for v in others])
        out.append(f"\nN={run['batch']} {run['precision']} {run['layout']}\n" + table(headers, rows))
        for r in run["shapes"]:
            for v, error in r["errors"].items():
                out.append(f"  {v} failed at {r['shape']}: {error}")
    return "\n".join(out)


def network_text(section):
    out = [f"Whole network: training steps (forward, backward, SGD step) on synthetic data on the device, "
           f"median of {section['repeats']} interleaved repeats"]
    for run in section["runs"]:
        rows = []
        for v, rec in run["variants"].items():
            if "median_s" not in rec:
                rows.append([v, "failed", "", "", "", rec.get("error", "")])
                continue
            mem = rec["peak_memory_bytes"]
            rows.append([v, _ms(rec["median_s"]), f"{rec['steps_per_s']:.2f}", f"{rec['images_per_s']:.1f}",
                         f"{rec['step_ratio_to_bn']:.2f}" if "step_ratio_to_bn" in rec else "1.00",
                         f"{mem / 2**30:.2f} GiB" if mem is not None else "n/a"])
        out.append(f"\nResNet-{run['depth']} {run['image_size']}px, batch {run['batch']}, {run['precision']}, "
                   f"{run['layout']}{', torch.compile' if run['compile'] else ''}\n"
                   + table(["variant", "step ms", "steps/s", "images/s", "time vs bn", "peak memory"], rows))
    notes = {rec.get("memory_note") for run in section["runs"] for rec in run["variants"].values()} - {None}
    out += [f"peak memory: {n}" for n in sorted(notes)]
    return "\n".join(out)


def pipeline_text(section):
    rows = []
    for rec in section["cpu"]:
        steady = rec["images_per_s"]
        rows.append(["CPU workers (PIL decode, data/ transforms)", rec["workers"],
                     f"{steady:.1f}" if steady is not None else "n/a", f"{rec['images_per_s_with_startup']:.1f}"])
    gpu = section["gpu"]
    rows.append(["GPU (nvJPEG decode_jpeg + GPU augment)", "-",
                 f"{gpu['images_per_s']:.1f}" if gpu.get("images_per_s") else gpu.get("note", gpu.get("error")), "-"])
    text = (f"Input pipeline: {section['files']} JPEGs ({section['unique_files']} distinct, {section['width']}x"
            f"{section['height']}, quality {section['quality']}, mean {section['mean_file_bytes'] / 1e3:.0f} kB), "
            f"RandomResizedCrop {section['crop']} + flip + normalize\n"
            + table(["path", "workers", "images/s", "images/s incl. start-up"], rows))
    notes = [f"  {rec['workers']} workers: {rec['note']}" for rec in section["cpu"] if "note" in rec]
    return "\n".join([text] + notes)


TRAINER_PROGRAMS = {"trainer": "train.py (this repository's trainer)", "plain": "benchmarks/plain_loop.py",
                    "timm": "timm's train.py"}


def trainer_text(section):
    s, programs = section["setup"], section["programs"]
    data = (f"{section['steps_per_epoch'] * s['world'] * s['batch']:,}-image PNG folder" if s["data"] == "folder"
            else "synthetic tensors")
    rows = []
    for name, rec in programs.items():
        runs = [r for r in section["runs"] if r["program"] == name]
        windows = sorted({f"{r['first_step']}-{r['last_step']}" for r in runs})
        ratio, within = rec.get("ratio_to_plain"), rec.get("ratio_to_plain_per_round_median")
        rows.append([TRAINER_PROGRAMS.get(name, name), ", ".join(windows), f"{rec['images_per_s']:.1f}",
                     " ".join(f"{v:.1f}" for v in rec["rounds"]), f"{ratio:.3f}" if ratio is not None else "1.000",
                     f"{within:.3f}" if within is not None else "1.000",
                     f"{statistics.median(r['wall_s'] for r in runs):.0f}"])
    text = (f"Trainer vs a plain loop: ResNet-{s['depth']} (width {s['width']}, {s['norm']}) at {s['size']} px, "
            f"{data}, {s['world']} process(es) x {s['batch']} images on {s['device']}, {s['precision']}, "
            f"{s['workers']} loader worker(s) and OMP_NUM_THREADS={s['threads']} per process; steady-state images/s "
            f"between the timed steps, median of {section['rounds']} interleaved round(s); vs plain: ratio of "
            f"the medians; in-round: median of the ratios within each round; wall s: the whole program, start-up "
            f"included\n"
            + table(["program", "timed steps", "images/s", "per round", "vs plain", "in-round", "wall s"], rows))
    return "\n".join([text] + [f"  note: {n}" for n in section["notes"]])


def trainer_step_text(section):
    s = section["setup"]
    return (f"Trainer step vs plain step, alternated step by step in one process: ResNet-{s['depth']} (width "
            f"{s['width']}, {s['norm']}) at {s['size']} px, batch {s['batch']} on {s['device']}, {s['precision']}, "
            f"{s['threads']} thread(s), {section['batches']} preloaded batches; medians over "
            f"{section['timed_pairs']} pairs after {s['warmup']}\n"
            + table(["trainer ms", "plain ms", "ratio of medians", "median of pair ratios"],
                    [[f"{section['trainer_ms']:.2f}", f"{section['plain_ms']:.2f}",
                      f"{section['ratio_of_medians']:.4f}", f"{section['median_of_ratios']:.4f}"]]))


def _gib(nbytes):
    return f"{nbytes / 2**30:.2f}" if nbytes is not None else "n/a"


def compile_text(section):
    out = [f"Eager against torch.compile: training steps (forward, backward, SGD step) on synthetic data on the "
           f"device, median of {section['repeats']} interleaved repeats of every (variant, mode); compile s: first "
           f"step minus the median step"]
    for run in section["runs"]:
        rows = []
        for v, modes in run["variants"].items():
            e, c = modes.get("eager", {}), modes.get("compiled", {})
            cell = {m: (f"{_ms(r['median_s'])}" if "median_s" in r else "failed") for m, r in (("e", e), ("c", c))}
            ratio = {m: (f"{r['step_ratio_to_bn']:.2f}" if "step_ratio_to_bn" in r else
                         "1.00" if v == "bn" and "median_s" in r else "-") for m, r in (("e", e), ("c", c))}
            rows.append([v, cell["e"], cell["c"], f"{e['images_per_s']:.1f}" if "images_per_s" in e else "-",
                         f"{c['images_per_s']:.1f}" if "images_per_s" in c else "-", ratio["e"], ratio["c"],
                         f"{modes['compiled_speedup']:.2f}" if "compiled_speedup" in modes else "-",
                         f"{c['compile_s']:.1f}" if "compile_s" in c else "-",
                         "?" if c.get("graph_breaks") is None else c["graph_breaks"],
                         f"{_gib(e.get('peak_memory_bytes'))} / {_gib(c.get('peak_memory_bytes'))}"])
        out.append(f"\nResNet-{run['depth']} {run['image_size']}px, batch {run['batch']}, {run['precision']}, "
                   f"{run['layout']}, backend {run['backend']}\n"
                   + table(["variant", "eager ms", "compiled ms", "eager img/s", "compiled img/s", "eager vs bn",
                            "compiled vs bn", "compiled speedup", "compile s", "graph breaks",
                            "peak GiB eager / compiled"], rows))
        for v, modes in run["variants"].items():
            for m in ("eager", "compiled"):
                if "error" in modes.get(m, {}):
                    out.append(f"  {v} {m} failed: {modes[m]['error']}")
    return "\n".join(out)
