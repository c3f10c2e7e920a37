"""Strict loading of state_dicts from this repository, torchvision and the SN authors' releases."""
import hashlib
import os
import re
from typing import NamedTuple

import torch

PREFIXES = ("module.", "_orig_mod.")


def strip_prefixes(state_dict):
    """Drop DataParallel/DDP `module.` and torch.compile `_orig_mod.` prefixes, however nested."""
    out = {}
    for key, value in state_dict.items():
        changed = True
        while changed:
            changed = False
            for prefix in PREFIXES:
                if key.startswith(prefix):
                    key, changed = key[len(prefix):], True
        out[key] = value
    return out


def load_strict(model, state_dict, source="checkpoint"):
    """Load with strict=True, first raising a one-line error naming the first mismatched key."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing key '{missing[0]}' ({len(missing)} missing)")
        if unexpected:
            parts.append(f"unexpected key '{unexpected[0]}' ({len(unexpected)} unexpected)")
        raise KeyError(f"{source} does not match the model: {', '.join(parts)}; "
                       "check the architecture (depth, variant, norm) it was trained with")
    for key, value in state_dict.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise ValueError(f"{source} does not match the model: '{key}' has shape {tuple(value.shape)}, "
                             f"the model expects {tuple(expected[key].shape)}")
    model.load_state_dict(state_dict, strict=True)
    return model


_RELEASED_NORM = re.compile(r"(^|\.)sn(\d+|_out)\.")
_NORM_MODULE = re.compile(r"(^|\.)(bn\d+|bn_out|downsample\.1)$")


def convert_released_sn(state_dict):
    """Convert a state_dict of the SN authors' released ResNet v1/v2 models to this repository's keys.

    Their keys carry `module.`, name norms sn1/sn2/sn3 (stem and blocks) and sn_out (v2), store
    gamma/beta as (1, C, 1, 1) and running stats as (1, C, 1). Values are copied unchanged.
    """
    out = {}
    for key, value in strip_prefixes(state_dict).items():
        key = _RELEASED_NORM.sub(lambda m: f"{m.group(1)}bn{m.group(2)}.", key)
        module, _, leaf = key.rpartition(".")
        if _NORM_MODULE.search(module) and leaf in ("weight", "bias", "running_mean", "running_var"):
            value = value.reshape(-1)
        out[key] = value
    return out


def released_sn_options(state_dict):
    """Norm options implied by a released SN checkpoint: using_bn=False when it has 2 logits."""
    for key, value in state_dict.items():
        if key.endswith("mean_weight"):
            return {"using_bn": value.numel() == 3}
    raise KeyError("no 'mean_weight' key: this is not a Switchable Normalization checkpoint")


class Checkpoint(NamedTuple):
    """A checkpoint file's content; `classes` is None when the file records no class names."""
    state: dict    # state_dict, prefixes removed, the SN authors' keys converted
    config: dict   # this repository's resolved config, or None
    kind: str      # "repo", "released", "safetensors" or "state_dict"
    classes: list  # class folder names in label order (this repository's checkpoints), or None


def load_checkpoint(path):
    """The Checkpoint of any supported file: this repository's training checkpoint ("repo", with its config
    and the class names it was trained on), the SN authors' format ("released", converted), "safetensors"
    or "state_dict" (e.g. torchvision). Prefixes `module.`/`_orig_mod.` are removed.

    Unreadable files raise FileNotFoundError or a one-line ValueError. The metadata that
    scripts/export_zoo.py stores in .safetensors files is read by models.zoo.embedded.
    """
    config = classes = None
    if str(path).endswith(".safetensors"):
        state, kind = read_safetensors(path), "safetensors"
    else:
        obj = load_file(path)
        if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "config" in obj:
            state, config, kind = obj["model"], obj["config"], "repo"
            classes = check_classes(obj.get("classes"), path)  # absent in checkpoints older than the field
        else:
            state, kind = (obj.get("state_dict", obj) if isinstance(obj, dict) else None), "state_dict"
    if not isinstance(state, dict) or not state or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{path}: no state_dict of tensors found (expected this repository's checkpoint, "
                         "a {'state_dict': ...} file, a plain state_dict or a .safetensors file)")
    state = strip_prefixes(state)
    if any(_RELEASED_NORM.search(k) for k in state):
        state, kind = convert_released_sn(state), "released"
    return Checkpoint(state, config, kind, classes)


def read_checkpoint(path):
    """(state_dict, config dict or None, kind) of any supported checkpoint file; see load_checkpoint."""
    return load_checkpoint(path)[:3]


def check_classes(classes, source):
    """`classes` if it is None or a list of distinct class names, else a one-line ValueError naming `source`."""
    if classes is None or (isinstance(classes, list) and all(isinstance(c, str) for c in classes)
                           and len(set(classes)) == len(classes)):
        return classes
    raise ValueError(f"{source}: 'classes' must be a list of distinct class names (or null), got "
                     f"{type(classes).__name__} {str(classes)[:60]}; the file is damaged or not written by this "
                     "repository")


def read_safetensors(path, tensors=True):
    """The state_dict (tensors=True) or the metadata dict (tensors=False) of a .safetensors file.

    A missing file raises FileNotFoundError; a file that is not one (garbage, truncated, empty) a one-line
    ValueError instead of safetensors' own error.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()} if tensors else (f.metadata() or {})
    except Exception as e:  # safetensors raises SafetensorError (or OSError) for a bad header or a short file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ValueError(f"{path}: not a readable .safetensors file ({reason}); "
                         "the file is corrupt or incomplete: copy or export it again") from None


CHECKSUM_KEY = "content_sha256"


def content_digest(obj):
    """sha256 (hex) of a checkpoint's content: keys, scalars and every tensor's dtype, shape and bytes.

    Computed over the values, not the file, so it is the same for any serialization of equal content
    and changes with any flipped bit of tensor data (which torch.load itself never notices).
    """
    h = hashlib.sha256()

    def visit(x):
        if torch.is_tensor(x):
            t = x.detach().cpu().contiguous()
            h.update(f"T{t.dtype}{tuple(t.shape)}|".encode())
            if t.numel():
                h.update(t.reshape(-1).view(torch.uint8).numpy().data)
        elif isinstance(x, dict):
            h.update(f"D{len(x)}|".encode())
            for key in sorted(x, key=repr):
                visit(key)
                visit(x[key])
        elif isinstance(x, (list, tuple)):
            h.update(f"{type(x).__name__[0]}{len(x)}|".encode())
            for item in x:
                visit(item)
        else:  # str, int, float, bool, None: repr round-trips exactly
            h.update(f"S{type(x).__name__}:{x!r}|".encode())
    visit(obj)
    return h.hexdigest()


def with_checksum(obj):
    """A copy of the checkpoint dict `obj` carrying its content digest under CHECKSUM_KEY."""
    return {**obj, CHECKSUM_KEY: content_digest(obj)}


def load_file(path):
    """torch.load with weights_only=True, checksum verified; FileNotFoundError or a one-line ValueError."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint not found: {path}") from None
    except Exception as e:  # unpickling errors, truncated zip archives, objects weights_only refuses
        raise ValueError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__})") from None
    if isinstance(obj, dict) and CHECKSUM_KEY in obj:
        expected = obj.pop(CHECKSUM_KEY)
        if content_digest(obj) != expected:
            raise ValueError(f"{path}: checksum mismatch (content sha256 differs from the one written): "
                             "the file is corrupt; use an older checkpoint or a fresh copy")
    return obj


def read_released_sn(path):
    """Load the authors' `torch.save` file ({'state_dict': ...}) safely and convert it."""
    state, _, kind = read_checkpoint(path)
    if kind != "released":
        raise ValueError(f"{path}: not in the SN authors' format (no sn1/sn2/sn3/sn_out keys)")
    return state
