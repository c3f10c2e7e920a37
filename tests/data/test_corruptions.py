"""data/corruptions.py and scripts/make_corruptions.py: the ImageNet-C layout reader (order, errors, per_class and
limit cuts) and the generator (byte-identical reruns and worker counts, 32 px resize, resume, manifest)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from data import corruption_names as names
from data.corruptions import MANIFEST, Domain, domain_dataset, find_domains, generate
from data.seeding import mix_seed

from .images import write_image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCRIPT = os.path.join(REPO, "scripts", "make_corruptions.py")
# Every corruption once, the severities cycling through 1..5 so that each is exercised.
SPOT = [(c, 1 + i % 5) for i, c in enumerate(names.ALL)]


def make_layout(root, domains, classes=("b", "a"), per_class=2):
    """root/<corruption>/<severity>/<class>/<i>.png for each (corruption, severity) in domains."""
    for n, (corruption, severity) in enumerate(domains):
        for c, name in enumerate(classes):
            for i in range(per_class):
                write_image(root / corruption / str(severity) / name / f"{i}.png", 100 * n + 10 * c + i,
                            size=(8, 8), fmt="PNG")
    return root


def make_source(root, classes=("dog", "cat"), per_class=2, size=28):
    """root/<class>/<i>.png: small grayscale noise images, as Fashion-MNIST's."""
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{i:02d}.png", 10 * c + i, size=(size, size), mode="L", fmt="PNG")
    return root


def files_of(root):
    """{relative path: bytes} of every file under root except the manifest."""
    found = {}
    for parent, _, files in os.walk(root):
        for name in files:
            path = os.path.join(parent, name)
            if name != MANIFEST:
                found[os.path.relpath(path, root)] = open(path, "rb").read()
    return found


def one_line(error):
    text = str(error.value)
    assert "\n" not in text and text
    return text


# ---- reader ----

def test_default_domains_are_the_common_ones_in_benchmark_order(tmp_path):
    make_layout(tmp_path, [("fog", 3), ("fog", 1), ("gaussian_noise", 2), ("speckle_noise", 1), ("mine", 1)])
    (tmp_path / "fog" / "notes").mkdir()
    notes = []
    domains = find_domains(tmp_path, log=notes.append)
    assert [(d.corruption, d.severity) for d in domains] == [("gaussian_noise", 2), ("fog", 1), ("fog", 3)]
    assert domains[0] == Domain("gaussian_noise", 2, os.path.join(tmp_path, "gaussian_noise", "2"))
    assert any("speckle_noise" in n and "mine" in n for n in notes)
    assert any("notes" in n for n in notes)


def test_asked_domains_keep_the_given_order_and_sort_severities(tmp_path):
    make_layout(tmp_path, [(c, s) for c in ("fog", "mine", "speckle_noise") for s in (1, 2, 4)])
    domains = find_domains(str(tmp_path), ["mine", "speckle_noise", "fog"], severities=[4, 1])
    assert [(d.corruption, d.severity) for d in domains] == [
        ("mine", 1), ("mine", 4), ("speckle_noise", 1), ("speckle_noise", 4), ("fog", 1), ("fog", 4)]


@pytest.mark.parametrize("case, fragment", [
    ("no root", "nowhere: folder not found"),
    ("known corruption missing", "snow: corruption folder not found"),
    ("unknown corruption", "unknown corruption 'blurr'"),
    ("severity missing", os.path.join("fog", "5") + ": severity folder not found"),
    ("bad severity", "severity 7"),
    ("no common corruption", "none of the 15 common corruptions"),
])
def test_layout_errors_are_one_line(tmp_path, case, fragment):
    make_layout(tmp_path / "c", [("fog", 1)])
    make_layout(tmp_path / "x", [("speckle_noise", 1)])
    calls = {"no root": lambda: find_domains(tmp_path / "nowhere"),
             "known corruption missing": lambda: find_domains(tmp_path / "c", ["fog", "snow"]),
             "unknown corruption": lambda: find_domains(tmp_path / "c", ["blurr"]),
             "severity missing": lambda: find_domains(tmp_path / "c", ["fog"], [1, 5]),
             "bad severity": lambda: find_domains(tmp_path / "c", ["fog"], [7]),
             "no common corruption": lambda: find_domains(tmp_path / "x")}
    with pytest.raises((ValueError, FileNotFoundError)) as error:
        calls[case]()
    assert fragment in one_line(error)


def test_per_class_and_limit_follow_the_sorted_listing(tmp_path):
    make_layout(tmp_path, [("fog", 2)], classes=("n02", "n01", "n03"), per_class=4)
    for name in ("3b.png", "10.png"):   # sorted as text, not as numbers: 0 1 10 2 3 3b
        write_image(tmp_path / "fog" / "2" / "n01" / name, 99, size=(8, 8), fmt="PNG")
    (domain,) = find_domains(tmp_path, ["fog"])
    classes = sorted(os.listdir(domain.path))
    listing = [(os.path.join(domain.path, c, f), t) for t, c in enumerate(classes)
               for f in sorted(os.listdir(os.path.join(domain.path, c)))]
    full = domain_dataset(domain, None)
    assert full.samples == listing and full.classes == classes
    cut = domain_dataset(domain, None, per_class=3)
    expected = [s for t in range(3) for s in [x for x in listing if x[1] == t][:3]]
    assert cut.samples == expected and cut.targets == [t for _, t in expected] and cut.classes == classes
    assert cut.root == domain.path and len(cut) == 9
    first = domain_dataset(domain, None, limit=7)
    assert first.samples == listing[:7] and first.classes == classes
    both = domain_dataset(domain, None, per_class=2, limit=3)
    assert both.samples == [listing[0], listing[1], listing[6]]
    image, target, bad = first[6]
    assert target == 1 and bad == -1 and tuple(image.shape) == (3, 8, 8)
    with pytest.raises(ValueError) as error:
        domain_dataset(domain, None, per_class=0)
    assert "per_class 0" in one_line(error)


# ---- generator ----

@pytest.fixture
def corrupt():
    return pytest.importorskip("imagecorruptions", reason="needs pip install -r requirements-corruptions.txt").corrupt


@pytest.fixture
def source(tmp_path):
    return make_source(tmp_path / "src")


@pytest.mark.slow
def test_every_corruption_is_byte_identical_across_runs_and_workers(tmp_path, source, corrupt):
    outputs = []
    for run, workers in ((1, 1), (2, 1), (3, 2)):
        for c, s in SPOT:
            generate(source, tmp_path / f"out{run}", [c], [s], seed=5, workers=workers)
        outputs.append(files_of(tmp_path / f"out{run}"))
    assert len(outputs[0]) == 4 * len(names.ALL)
    assert outputs[0] == outputs[1] == outputs[2]
    together = tmp_path / "together"     # all domains in one call: the same files as one call per domain
    generate(source, together, names.ALL[::4], names.SEVERITIES, seed=5)
    shared = set(files_of(together)) & set(outputs[0])
    assert len(shared) == 4 * len(names.ALL[::4])
    assert {k: files_of(together)[k] for k in shared} == {k: outputs[0][k] for k in shared}
    other_seed = tmp_path / "seed6"
    generate(source, other_seed, ["gaussian_noise"], [1], seed=6)
    key = os.path.join("gaussian_noise", "1", "cat", "00.png")
    assert files_of(other_seed)[key] != outputs[0][key]


def test_images_are_grown_to_32_px_and_seeded_per_image(tmp_path, source, corrupt):
    notes = generate(source, tmp_path / "out", ["gaussian_noise", "impulse_noise", "brightness"], [3], seed=1)
    assert any("resized 4 images from 28x28 to 32x32" in n for n in notes)
    # The reference, from the definitions: bilinear 28 -> 32, 3 channels, numpy seeded with the image's seed.
    classes = sorted(os.listdir(source))
    for target, name in enumerate(classes):
        for i, file in enumerate(sorted(os.listdir(source / name))):
            index = 2 * target + i
            grown = np.asarray(Image.open(source / name / file).convert("RGB").resize((32, 32), Image.BILINEAR))
            for c in ("gaussian_noise", "impulse_noise", "brightness"):
                seed = mix_seed(1, names.ALL.index(c), 3, index) % 2 ** 32
                np.random.seed(seed)
                extra = {"seed": seed} if c == "impulse_noise" else {}
                expected = corrupt(grown, corruption_name=c, severity=3, **extra)
                with Image.open(tmp_path / "out" / c / "3" / name / file) as im:
                    assert im.mode == "RGB" and im.size == (32, 32)
                    assert np.array_equal(np.asarray(im), expected), (c, name, file)


def test_per_class_keeps_the_images_seeds(tmp_path, corrupt):
    src = make_source(tmp_path / "src", per_class=3)
    generate(src, tmp_path / "all", ["shot_noise"], [2])
    generate(src, tmp_path / "cut", ["shot_noise"], [2], per_class=1, limit=1)
    cut = files_of(tmp_path / "cut")
    assert list(cut) == [os.path.join("shot_noise", "2", "cat", "00.png")]
    assert cut.items() <= files_of(tmp_path / "all").items()


def test_an_interrupted_run_leaves_no_partial_file_and_resumes(tmp_path, source, corrupt, monkeypatch):
    import data.corruptions as module
    reference = tmp_path / "reference"
    generate(source, reference, ["snow", "fog"], [2])
    write = module._write_png
    calls = []

    def full_disk(pixels, path):
        calls.append(path)
        if len(calls) == 6:     # the second image of the second domain: the disk fills up in os.replace
            monkeypatch.setattr(os, "replace", no_space)
        try:
            write(pixels, path)
        finally:
            monkeypatch.setattr(os, "replace", replace)
    replace = os.replace

    def no_space(*args):
        raise OSError(28, "No space left on device", args[1])
    monkeypatch.setattr(module, "_write_png", full_disk)
    out = tmp_path / "out"
    with pytest.raises(OSError):
        generate(source, out, ["snow", "fog"], [2])
    partial = files_of(out)     # no temporary file left either: files_of lists hidden names too
    assert len(partial) == 5 and partial.items() <= files_of(reference).items()
    assert json.loads((out / MANIFEST).read_text())["completed"] == [["snow", 2]]
    assert [d.corruption for d in find_domains(out, ["snow"])] == ["snow"]
    with pytest.raises(ValueError) as error:
        find_domains(out)
    assert "not finished" in one_line(error)
    monkeypatch.setattr(module, "_write_png", write)
    calls.clear()
    generate(source, out, ["snow", "fog"], [2])
    assert files_of(out) == files_of(reference)
    assert [(d.corruption, d.severity) for d in find_domains(out)] == [("snow", 2), ("fog", 2)]


def test_a_rerun_with_other_parameters_fails_with_one_line(tmp_path, source, corrupt):
    generate(source, tmp_path / "out", ["contrast"], [1], seed=0)
    generate(source, tmp_path / "out", ["contrast", "fog"], [1, 2], seed=0)    # more domains: allowed
    for change, fragment in (({"seed": 1}, "seed=0, not 1"), ({"per_class": 1}, "per_class=None, not 1"),
                             ({"min_size": 40}, "min_size=32, not 40")):
        with pytest.raises(ValueError) as error:
            generate(source, tmp_path / "out", ["contrast"], [1], **change)
        assert fragment in one_line(error)
    write_image(source / "cat" / "02.png", 7, size=(28, 28), mode="L", fmt="PNG")    # the seeds' indices move
    with pytest.raises(ValueError) as error:
        generate(source, tmp_path / "out", ["contrast"], [1])
    assert "source_files='4 files" in one_line(error)
    with pytest.raises(ValueError) as error:
        generate(source, source / "cat" / "c", ["contrast"], [1])
    assert "inside the source" in one_line(error)
    (tmp_path / "foreign" / "x").mkdir(parents=True)
    with pytest.raises(ValueError) as error:
        generate(source, tmp_path / "foreign", ["contrast"], [1])
    assert f"no {MANIFEST}" in one_line(error)


# ---- command line ----

def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, SCRIPT, *map(str, args)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


@pytest.mark.slow
def test_cli_writes_and_fails_with_exit_code_2(tmp_path, source, corrupt):
    done = run_cli(source, tmp_path / "out", "--corruptions", "brightness,saturate", "--severities", "5,1",
                   "--limit", "3")
    assert done.returncode == 0, done.stderr
    assert "resized 3 images from 28x28 to 32x32" in done.stdout and "took" in done.stdout
    assert len(files_of(tmp_path / "out")) == 12
    failed = run_cli(source, tmp_path / "o2", "--corruptions", "fog,blurr")
    lines = failed.stderr.strip().splitlines()
    assert failed.returncode == 2 and len(lines) == 1 and "unknown corruption 'blurr'" in lines[0], failed.stderr


def cli_main():
    import importlib.util
    spec = importlib.util.spec_from_file_location("make_corruptions_cli", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.mark.parametrize("case, fragment", [
    ("missing source", "missing: folder not found"),
    ("bad severity", "severity 6"),
    ("other seed", "seed=0, not 2"),
    ("no package", "pip install -r requirements-corruptions.txt"),
    ("full disk", "No space left on device"),
])
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path, source, corrupt, case, fragment, capsys, monkeypatch):
    main = cli_main()
    out = tmp_path / "out"
    assert main([str(source), str(out), "--corruptions", "contrast", "--severities", "1"]) == 0
    args = {"missing source": [tmp_path / "missing", tmp_path / "o2"],
            "bad severity": [source, tmp_path / "o2", "--severities", "1,6"],
            "other seed": [source, out, "--seed", "2"],
            "no package": [source, tmp_path / "o2"],
            "full disk": [source, tmp_path / "o2", "--corruptions", "fog"]}[case]
    if case == "no package":
        monkeypatch.setitem(sys.modules, "imagecorruptions", None)
    if case == "full disk":
        def full(*a, **k):
            raise OSError(28, "No space left on device", str(tmp_path / "o2"))
        monkeypatch.setattr(Image.Image, "save", full)
    capsys.readouterr()
    assert main([str(a) for a in args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], lines
    if case == "full disk":
        assert files_of(tmp_path / "o2") == {}
