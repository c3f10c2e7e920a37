"""Input-pipeline throughput: decode + augment of generated ImageNet-like JPEGs, CPU workers and GPU decode."""
import os
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from configs.schema import DataConfig
from data import build_train_loader
from data.transforms import IMAGENET_MEAN, IMAGENET_STD

from .cache import cached_folder

# ImageNet's training images average roughly 400x350 px and 110 kB; quality 90 is what its crawl mostly used.
WIDTH, HEIGHT, QUALITY = 500, 375, 90
CLASSES = 10


def _field(rng, height, width, levels, decay):
    """A 1/f-like random field: white noise added at every octave while upsampling, so edges exist at all scales."""
    field = torch.from_numpy(rng.standard_normal((1, 1, 3, 4)).astype(np.float32))
    for level in range(1, levels):
        field = F.interpolate(field, scale_factor=2, mode="bicubic", align_corners=False)
        field += decay ** level * torch.from_numpy(rng.standard_normal(field.shape).astype(np.float32))
    field = F.interpolate(field, size=(height, width), mode="bicubic", align_corners=False)[0, 0]
    return (field - field.mean()) / field.std()


def synthetic_photo(rng, width=WIDTH, height=HEIGHT):
    """HxWx3 uint8 image with photo-like statistics (shared luminance, weaker chroma, sensor grain).

    Pure noise would compress far worse than a photo and a flat image far better; this lands near
    100 kB at 500x375 and quality 90, like an average ImageNet JPEG.
    """
    luminance = _field(rng, height, width, 8, 0.9)
    channels = torch.stack([luminance + 0.35 * _field(rng, height, width, 6, 0.9) for _ in range(3)])
    grain = torch.from_numpy(rng.standard_normal((3, height, width)).astype(np.float32))
    pixels = 120 + 50 * channels + 2 * grain
    return pixels.clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


def default_cache_dir():
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "sn-benchmark")


def jpeg_folder(cache_dir, count, unique, seed=0, progress=print):
    """ImageFolder root (train/<class>/<i>.JPEG) of `count` files cycling over `unique` generated JPEGs.

    Repeated files are hard links: decoding them costs the same as decoding distinct ones, and
    generating is the slow part.
    """
    unique = min(unique, count)

    def fill(tmp):
        rng = np.random.default_rng(seed)
        for c in range(CLASSES):
            os.makedirs(os.path.join(tmp, "train", f"class_{c:02d}"))
        paths = [os.path.join(tmp, "train", f"class_{i % CLASSES:02d}", f"{i:06d}.JPEG") for i in range(count)]
        for i, path in enumerate(paths):
            if i < unique:
                Image.fromarray(synthetic_photo(rng)).save(path, "JPEG", quality=QUALITY)
            else:
                os.link(paths[i % unique], path)
    return cached_folder(cache_dir, f"jpeg-{count}-{unique}-{WIDTH}x{HEIGHT}-q{QUALITY}-s{seed}", fill, progress)


def list_jpegs(root):
    folder = os.path.join(root, "train")
    return sorted(os.path.join(folder, c, f) for c in os.listdir(folder) for f in os.listdir(os.path.join(folder, c)))


def steady_rate(arrivals, batch, workers):
    """Images/s once every worker is busy, from the arrival times of the batches.

    Batch i comes from worker i mod W, in round i // W; the first round carries the start-up (worker
    launch, and the other workers' batches finished while the first was awaited), so the rate is counted
    from the end of round 0 to the end of the last complete round. None if there are fewer than 2 rounds.
    """
    w = max(workers, 1)
    rounds = len(arrivals) // w
    if rounds < 2:
        return None
    first, last = w - 1, rounds * w - 1
    return (last - first) * batch / (arrivals[last] - arrivals[first])


def loader_arrivals(root, workers, batch, crop):
    """Seconds from the loader's creation to the arrival of each batch, over one epoch of this repo's train loader."""
    cfg = DataConfig(root=root, workers=workers, train_crop=crop)
    start = time.perf_counter()
    loader = build_train_loader(cfg, batch, rank=0, world=1, seed=0)
    loader.sampler.set_epoch(0)
    arrivals = []
    for _ in loader:
        arrivals.append(time.perf_counter() - start)
    return arrivals


def run_cpu_workers(root, workers_list, batch, crop, repeats, warmup, progress=print):
    """Round-robin over worker counts; per count the median steady and start-up-included rates."""
    runs = {w: [] for w in workers_list}
    for _ in range(warmup):
        for w in workers_list:
            loader_arrivals(root, w, batch, crop)
    for r in range(repeats):
        shift = r % len(workers_list)
        for w in workers_list[shift:] + workers_list[:shift]:
            progress(f"pipeline: CPU decode+augment, {w} workers, repeat {r + 1}/{repeats}")
            runs[w].append(loader_arrivals(root, w, batch, crop))
    out = []
    for w in workers_list:
        steady = [steady_rate(a, batch, w) for a in runs[w]]
        record = {"workers": w, "batch": batch, "arrivals_s": runs[w],
                  "images_per_s_with_startup": statistics.median(len(a) * batch / a[-1] for a in runs[w])}
        if None in steady:
            record["images_per_s"] = None
            record["note"] = (f"fewer than 2 rounds of {max(w, 1)} batches: raise --pipeline-images to at least "
                              f"{2 * max(w, 1) * batch}")
        else:
            record["images_per_s"] = statistics.median(steady)
        out.append(record)
    return out


def decode_augment(encoded, device, crop, mean, std):
    """Decode a list of JPEG byte tensors on `device`, then RandomResizedCrop + flip + normalize there."""
    from torchvision.io import ImageReadMode, decode_jpeg
    from torchvision.transforms import RandomResizedCrop

    images = decode_jpeg(encoded, mode=ImageReadMode.RGB, device=device)
    out = torch.empty(len(images), 3, crop, crop, device=device)
    for i, image in enumerate(images):
        top, left, h, w = RandomResizedCrop.get_params(image, scale=[0.08, 1.0], ratio=[3 / 4, 4 / 3])
        patch = image[None, :, top:top + h, left:left + w].float()
        patch = F.interpolate(patch, size=(crop, crop), mode="bilinear", align_corners=False, antialias=True)
        out[i] = patch[0].flip(-1) if torch.rand(()) < 0.5 else patch[0]
    return out.div_(255).sub_(mean).div_(std)


def run_gpu_decode(paths, device, batch, crop, clock, repeats, warmup):
    """Images/s of nvJPEG batch decode + GPU augmentation over the files already read into memory."""
    from torchvision.io import read_file

    from .timing import interleaved

    encoded = [read_file(p) for p in paths]
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(3, 1, 1)
    chunks = [encoded[i:i + batch] for i in range(0, len(encoded), batch)]

    def one_pass():
        for chunk in chunks:
            decode_augment(chunk, device, crop, mean, std)

    timed = interleaved({"gpu": one_pass}, clock, repeats, warmup)["gpu"]
    if "error" in timed:
        return {"images_per_s": None, "error": timed["error"]}
    return {"images": len(encoded), "batch": batch, "median_s": timed["median_s"], "samples_s": timed["samples_s"],
            "images_per_s": len(encoded) / timed["median_s"]}


def run_pipeline(device, cache_dir, count, unique, batch, crop, workers_list, clock, repeats, warmup,
                 progress=print):
    root = jpeg_folder(cache_dir, count, unique, progress=progress)
    paths = list_jpegs(root)
    sizes = [os.path.getsize(p) for p in paths[:unique]]
    out = {"folder": root, "files": len(paths), "unique_files": len(sizes), "width": WIDTH, "height": HEIGHT,
           "quality": QUALITY, "mean_file_bytes": statistics.mean(sizes), "crop": crop,
           "cpu": run_cpu_workers(root, workers_list, batch, crop, repeats, warmup, progress)}
    if device.type == "cuda":
        progress("pipeline: GPU decode (nvJPEG) + augment")
        out["gpu"] = run_gpu_decode(paths, device, batch, crop, clock, repeats, warmup)
    else:
        out["gpu"] = {"images_per_s": None, "note": "n/a: no CUDA"}
    return out
