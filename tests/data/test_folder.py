"""ImageFolder: layout, symlinks, RGB decoding, bad-file substitution, per-sample augmentation seeds."""
import multiprocessing
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from configs.schema import DataConfig
from data import ImageFolder, build_eval_loader

from .images import make_folder, write_image, write_truncated

AUGMENT = T.Compose([T.RandomResizedCrop(16, scale=(0.2, 1.0)), T.RandomHorizontalFlip(), T.ToTensor()])


def decoded(path):
    """The file as a float CHW RGB tensor, decoded here independently of the dataset."""
    with Image.open(path) as im:
        return torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1).float() / 255


def test_classes_and_targets_follow_sorted_folders(tmp_path):
    make_folder(tmp_path, classes=("cat", "ant", "bee"), per_class=4)
    write_image(tmp_path / "bee" / "Z.JPEG", seed=7)         # upper-case extension counts
    (tmp_path / "bee" / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path)
    assert ds.classes == ["ant", "bee", "cat"] and len(ds) == 13
    for path, target in ds.samples:
        assert ds.classes[target] == path.split("/")[-2]
    paths = [p for p, _ in ds.samples]
    assert paths == sorted(paths, key=lambda p: (p.split("/")[-2], p))
    image, target, bad = ds[5]
    assert target == 1 and bad == -1 and image.shape == (3, 30, 40)
    assert torch.allclose(image, decoded(ds.samples[5][0]))


def test_cmyk_and_png_named_jpeg_decode_to_rgb(tmp_path):
    write_image(tmp_path / "a" / "cmyk.jpg", seed=1, mode="CMYK")
    write_image(tmp_path / "a" / "gray.JPEG", seed=2, mode="L", fmt="PNG")
    ds = ImageFolder(tmp_path)
    for i in range(2):
        image, _, bad = ds[i]
        assert image.shape == (3, 30, 40) and bad == -1
        assert torch.allclose(image, decoded(ds.samples[i][0]))
    gray = ds[1][0]
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def test_unreadable_files_are_reported_and_replaced_by_the_next_readable(tmp_path):
    for i in range(4):
        write_image(tmp_path / "a" / f"{i}.jpg", seed=i)
    write_truncated(tmp_path / "a" / "1.jpg", seed=1)
    (tmp_path / "a" / "2.jpg").write_bytes(b"this is not a jpeg" * 10)
    write_image(tmp_path / "b" / "0.jpg", seed=10)
    (tmp_path / "b" / "1.png").write_bytes(b"\x89PNG garbage")   # last index wraps to 0
    ds = ImageFolder(tmp_path)
    assert [ds[i][2] for i in range(6)] == [-1, 1, 2, -1, -1, 5]
    for index, source in [(1, 3), (2, 3), (5, 0)]:
        image, target, bad = ds[index]
        assert bad == index and target == ds.samples[source][1]
        assert torch.allclose(image, decoded(ds.samples[source][0]))
        assert torch.equal(image, ds[(index, 3)][0])      # deterministic with a key tuple as well
    assert ds.samples[ds[1][2]][0].endswith("a/1.jpg")


def test_truncated_file_is_bad_not_silently_padded(tmp_path):
    write_truncated(tmp_path / "a" / "0.jpg", seed=0)
    write_image(tmp_path / "a" / "1.jpg", seed=1)
    assert ImageFolder(tmp_path)[0][2] == 0


def test_nothing_readable_raises(tmp_path):
    write_truncated(tmp_path / "a" / "0.jpg", seed=0)
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x.png").write_bytes(b"garbage")
    with pytest.raises(RuntimeError, match="none of the 2"):
        ImageFolder(tmp_path)[1]


@pytest.mark.parametrize("layout, error", [("missing", FileNotFoundError), ("empty", ValueError),
                                           ("no_images", ValueError), ("file", ValueError)])
def test_layout_errors_are_one_line_and_name_the_path(tmp_path, layout, error):
    root = tmp_path / "train"
    if layout == "empty":
        root.mkdir()
        (root / "stray.jpg").write_bytes(b"")
    elif layout == "no_images":
        (root / "cls").mkdir(parents=True)
        (root / "cls" / "readme.txt").write_text("x")
    elif layout == "file":
        root.write_text("x")
    with pytest.raises(error) as info:
        ImageFolder(root)
    message = str(info.value)
    assert "\n" not in message and str(root) in message
    assert "expected ImageFolder layout root/<class>/<image>" in message


def test_augmentation_is_fixed_by_seed_epoch_and_index(tmp_path):
    make_folder(tmp_path, per_class=2)
    ds = ImageFolder(tmp_path, transform=AUGMENT, seed=3)
    first = [ds[(i, 0)][0] for i in range(len(ds))]
    torch.manual_seed(123)        # the global RNG state must not matter...
    state = torch.get_rng_state()
    again = [ds[(i, 0)][0] for i in reversed(range(len(ds)))][::-1]
    assert torch.equal(torch.get_rng_state(), state)      # ...nor be changed
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    other_epoch = [ds[(i, 1)][0] for i in range(len(ds))]
    other_seed = ImageFolder(tmp_path, transform=AUGMENT, seed=4)[(0, 0)][0]
    assert not all(torch.equal(a, b) for a, b in zip(first, other_epoch))
    assert not torch.equal(first[0], other_seed)


def test_int_keys_are_not_reseeded(tmp_path):
    make_folder(tmp_path, per_class=1)
    ds = ImageFolder(tmp_path, transform=AUGMENT)
    torch.manual_seed(0)
    a = ds[0][0]
    torch.manual_seed(0)
    assert torch.equal(ds[0][0], a)                   # follows the global RNG
    assert not all(torch.equal(ds[0][0], a) for _ in range(3))


def test_same_batches_with_two_workers_and_none(tmp_path):
    make_folder(tmp_path, per_class=4)
    ds = ImageFolder(tmp_path, transform=AUGMENT, seed=1)
    keys = [(i, 2) for i in [5, 0, 11, 3, 7, 1, 9, 2]]

    def batches(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, sampler=keys, num_workers=workers)
        return [b[0] for b in loader]

    serial, parallel = batches(0), batches(2)
    direct = torch.stack([ds[k][0] for k in keys])
    assert torch.equal(torch.cat(serial), direct) and torch.equal(torch.cat(parallel), direct)


def scan_with_timeout(root, timeout=60):
    """(classes, samples, notes) of ImageFolder(root), built in a forked child so that a walk that never ends
    fails the test instead of hanging it."""
    receive, send = multiprocessing.Pipe(duplex=False)

    def child():
        try:
            ds = ImageFolder(root)
            send.send((ds.classes, ds.samples, getattr(ds, "notes", None)))
        except Exception as error:          # noqa: BLE001 - handed to the parent, which re-raises it
            send.send(error)

    process = multiprocessing.get_context("fork").Process(target=child)
    process.start()
    try:
        if not receive.poll(timeout):
            pytest.fail(f"ImageFolder({root}) did not finish within {timeout} s")
        result = receive.recv()
    finally:
        process.kill()
        process.join()
    if isinstance(result, Exception):
        raise result
    return result


def real_samples(root, classes=("ant", "cat"), per_class=2):
    """make_folder's files as the sample list a scan must return: only the real files, each under its class."""
    make_folder(root, classes=classes, per_class=per_class)
    return [(os.path.join(root, name, f"{i}.jpg"), target)
            for target, name in enumerate(sorted(classes)) for i in range(per_class)]


SKIPPED_LINKS = {      # links made in root=val/ (class folders ant, cat) -> the one note the scan must give
    "loop to a parent": ({"cat/sub/up": ".."},
                         "val/cat/sub/up: symlink loop to an already visited folder, skipped"),
    "loop to the split root": ({"ant/loopdir": ".."},          # val/ itself, so val/cat as class ant
                               "val/ant/loopdir: symlink to a folder that contains the split, skipped"),
    "two loops and one above the split": ({"ant/a": "..", "ant/b": "..", "cat/up": "../.."},   # hangs on old code
                                          "val/ant/a and 2 more: symlink to a folder that contains the split, skipped"),
    "into another class": ({"ant/borrowed": "../cat", "ant/stolen.jpg": "../cat/0.jpg"},
                           "val/ant/borrowed and 1 more: symlink into class folder cat, whose images are counted "
                           "there, skipped"),
    "same file twice": ({"cat/a_copy.jpg": "0.jpg", "cat/nested/again.jpg": "../1.jpg"},   # a_copy sorts first
                        "val/cat/a_copy.jpg and 1 more: another link to a file already counted in this class, skipped"),
    "broken": ({"cat/gone.jpg": "missing.jpg", "cat/gonedir": "../../nowhere", "ant/self.jpg": "self.jpg"},
               "val/ant/self.jpg and 2 more: broken symlink, skipped"),
}


@pytest.mark.parametrize("case", SKIPPED_LINKS)
def test_symlinks_that_would_count_images_twice_or_wrongly_are_skipped_and_noted(tmp_path, case):
    links, note = SKIPPED_LINKS[case]
    root = tmp_path / "val"
    expected = real_samples(root)
    for link, target in links.items():
        (root / link).parent.mkdir(exist_ok=True)
        (root / link).symlink_to(target)
    classes, samples, notes = scan_with_timeout(root)
    assert classes == ["ant", "cat"] and samples == expected
    assert notes == [note]


def test_hard_links_to_one_file_count_once(tmp_path):
    expected = real_samples(tmp_path)
    os.link(tmp_path / "cat" / "1.jpg", tmp_path / "cat" / "hard.jpg")
    assert scan_with_timeout(tmp_path)[1] == expected


def test_symlinked_class_folder_and_subfolder_are_followed(tmp_path):
    root = tmp_path / "val"
    expected = real_samples(root)
    write_image(tmp_path / "store" / "bee" / "b.jpg", seed=20)
    write_image(tmp_path / "store" / "pool" / "p.jpg", seed=21)
    (root / "bee").symlink_to(tmp_path / "store" / "bee")              # a class folder that is a link
    (root / "cat" / "pool").symlink_to(tmp_path / "store" / "pool")    # a linked subfolder outside the split
    classes, samples, notes = scan_with_timeout(root)
    assert classes == ["ant", "bee", "cat"]
    assert samples == ([s for s in expected if s[1] == 0] + [(str(root / "bee" / "b.jpg"), 1)]
                       + [(p, 2) for p, t in expected if t == 1] + [(str(root / "cat" / "pool" / "p.jpg"), 2)])
    assert notes == []


def test_two_class_folders_that_are_one_folder_are_an_error(tmp_path):
    root = tmp_path / "val"
    real_samples(root)
    (root / "dog").symlink_to("cat")
    with pytest.raises(ValueError) as info:
        scan_with_timeout(root)
    message = str(info.value)
    assert "\n" not in message and str(root / "cat") in message and str(root / "dog") in message


def test_eval_loader_prints_the_notes_once_on_rank_0(tmp_path, capsys):
    real_samples(tmp_path / "val")
    (tmp_path / "val" / "cat" / "gone.jpg").symlink_to("missing.jpg")
    cfg = DataConfig(root=str(tmp_path), workers=0, val_resize=20, val_crop=16)
    assert len(build_eval_loader(cfg, 2, rank=1, world=2).dataset) == 4
    assert capsys.readouterr().out == ""
    build_eval_loader(cfg, 2, rank=0, world=2)
    assert capsys.readouterr().out == "note: val/cat/gone.jpg: broken symlink, skipped\n"
    build_eval_loader(cfg, 2, rank=0, world=2)          # the recalibration loader scans a split again
    assert capsys.readouterr().out == ""
