"""Evaluation of one adaptation method over a list of test domains (corruption x severity), exact for any world.

How the streams are split over processes, so that the numbers do not depend on the world size:
- source, adabn, batch, prior and tent in mode episodic: batch j of each domain's stream runs on rank
  j % world (adabn first pools the statistics of the whole domain over all ranks);
- tent in mode domain: domain d runs whole on rank d % world, in stream order;
- tent in mode continual: one stream over all domains in order; it needs one process.
"""
import os
import time

import torch

from data import build_stream_loader
from norms import adaptation
from results.robustness import summarize

from .adapt import BATCH_METHODS, Adapter, tent_lr
from .distributed import all_gather_objects, all_reduce_sum
from .evaluate import batch_sums, metrics, progress
from .run_folder import CONFIG_NAME
from .stream import StreamBatches, stream_order


def domain_key(domain):
    """"corruption/severity": the domain's name in streams, logs and logits files."""
    return f"{domain.corruption}/{domain.severity}"


def share(cfg, index, env):
    """How domain `index`'s batches are shared out: "batch", "all" or "none" for this rank (see the module)."""
    if cfg.method == "tent" and cfg.tent_mode == "domain":
        return "all" if index % env.world == env.rank else "none"
    if cfg.method == "tent" and cfg.tent_mode == "continual":
        if env.world > 1:
            raise ValueError("tent in mode continual adapts along one stream over all domains and runs on one "
                             "process; rerun with a single process, or use --tent-mode domain or episodic")
        return "all"
    return "batch"


def evaluate_domains(model, domains, open_domain, cfg, env, data_cfg, precision, eval_batch, keep_logits=False):
    """Per-domain metrics (and, with keep_logits, stream-ordered logits) of method cfg.method.

    open_domain(domain) returns (dataset, class check: "verified" or "not verified"). Returns
    (rows, logits, notes, checks): rows as engine.evaluate.metrics plus corruption, severity and error.
    """
    batch = cfg.batch if cfg.method in BATCH_METHODS else eval_batch
    adapter = Adapter(model, cfg, env.device, precision)
    notes = []
    if cfg.method != "source" and adapter.layers == 0 and cfg.method != "tent":
        notes.append(f"the model has no batch statistics (normalizer without them), so {cfg.method} "
                     "equals source: every statistics method is the identity here")
    sums = torch.zeros(len(domains), 5, dtype=torch.float64, device=env.device)
    kept, checks = [], set()
    started = time.time()
    try:
        for index, domain in enumerate(domains):
            dataset, check = open_domain(domain)
            checks.add(check)
            order = stream_order(len(dataset), cfg.seed, domain_key(domain))
            if cfg.method == "adabn":
                pooled = StreamBatches(order, eval_batch, env.rank, env.world)
                adapter.start_domain(_images(build_stream_loader(data_cfg, dataset, pooled), env.device))
            else:
                adapter.start_domain()
            sampler = StreamBatches(order, batch, env.rank, env.world, share(cfg, index, env))
            loader = build_stream_loader(data_cfg, dataset, sampler)
            kept_domain = {"logits": [], "targets": [], "indices": [], "positions": []}
            positions = torch.as_tensor(sampler.positions(), dtype=torch.long)
            offset = 0
            for images, targets, bad in progress(loader, domain_key(domain)):
                images, targets = images.to(env.device, non_blocking=True), targets.to(env.device)
                logits = adapter.predict(images)
                ok = bad.to(env.device) < 0
                sums[index] += batch_sums(logits, targets, ok)
                if keep_logits:
                    take = ok.cpu()
                    kept_domain["logits"].append(logits[ok].cpu())
                    kept_domain["targets"].append(targets[ok].cpu())
                    where = positions[offset:offset + len(targets)][take]
                    kept_domain["positions"].append(where)
                    kept_domain["indices"].append(order[where])
                offset += len(targets)
            if keep_logits:
                kept.append({k: torch.cat(v) if v else torch.empty(0) for k, v in kept_domain.items()})
    finally:
        adapter.close()
    all_reduce_sum(sums)
    rows = [{"corruption": d.corruption, "severity": d.severity, **metrics(s)} for d, s in zip(domains, sums)]
    for row in rows:
        row["error"] = 100.0 - row["top1"]
    logits = _gather_logits(kept, domains) if keep_logits else None
    notes.append(f"{sum(r['images'] for r in rows)} images in {len(domains)} domains in {time.time() - started:.1f} s")
    return rows, logits, notes, checks


def _images(loader, device):
    for images, _, _ in loader:
        yield images.to(device, non_blocking=True)


def _gather_logits(kept, domains):
    """{domain key: logits, targets, dataset indices, stream positions}, all ranks merged in stream order."""
    parts = all_gather_objects(kept)
    out = {}
    for index, domain in enumerate(domains):
        pieces = [p[index] for p in parts]
        merged = {k: torch.cat([p[k] for p in pieces]) for k in pieces[0]}
        order = merged["positions"].argsort()
        out[domain_key(domain)] = {k: v[order] for k, v in merged.items()}
    return out


def result_record(model, cfg, adapt, domains, open_domain, env, eval_batch, checkpoint, corruptions_root,
                  keep_logits=False):
    """(record, logits) of method `adapt` over `domains` (docs/robustness.md has the record's fields)."""
    started = time.time()
    rows, logits, notes, checks = evaluate_domains(model, domains, open_domain, adapt, env, cfg.data,
                                                   cfg.train.precision, eval_batch, keep_logits)
    imagenet_c = corruptions_root is not None and cfg.model.num_classes == 1000
    record = {"kind": "robustness", "schema": 1, "checkpoint": checkpoint, "norm": cfg.norm.type,
              "run": run_name(checkpoint), **describe(adapt, model), "world": env.world,
              "corruptions_root": corruptions_root, "imagenet_c": imagenet_c,
              "class_order": "verified" if checks == {"verified"} else "not verified", "domains": rows,
              "summary": summarize(rows, imagenet_c=imagenet_c) if corruptions_root else None,
              "notes": notes, "seconds": round(time.time() - started, 1)}
    return record, logits


def run_name(checkpoint):
    """The run folder's name for this repository's checkpoints, else the file's stem."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    if os.path.exists(os.path.join(folder, CONFIG_NAME)):
        return os.path.basename(folder)
    return os.path.splitext(os.path.basename(checkpoint))[0]


def summary_line(record):
    """The human-readable summary of a result record."""
    tent = record["tent"]
    method = (record["method"] + (f" N={record['prior_n']:g}" if record["prior_n"] is not None else "")
              + (f" B={record['adapt_batch']}" if record["adapt_batch"] else "")
              + (f" ({tent['mode']}, {tent['params']}, lr {tent['lr']:.3g})" if tent else ""))
    if record["summary"] is None:
        (row,) = record["domains"]
        return (f"{record['checkpoint']} with {method}: top1 {row['top1']:.2f} top5 {row['top5']:.2f} "
                f"on {row['images']} images")
    summary = record["summary"]
    mce = f", mCE {summary['mce']:.2f}" if summary.get("mce") is not None else ""
    return (f"{record['checkpoint']} with {method}: mean error {summary['mean_error']:.2f}{mce} over "
            f"{len(record['domains'])} domains, {sum(r['images'] for r in record['domains'])} images")


def describe(cfg, model):
    """The record's method fields: B for batch-dependent methods, N for prior, the Tent settings."""
    fields = {"method": cfg.method, "adapt_batch": cfg.batch if cfg.method in BATCH_METHODS else None,
              "prior_n": cfg.prior if cfg.method == "prior" else None, "tent": None, "stream_seed": cfg.seed}
    if cfg.method == "tent":
        fields["tent"] = {"lr": tent_lr(cfg), "lr_rule": "0.00025*B/64" if cfg.tent_lr is None else None,
                          "momentum": cfg.tent_momentum, "mode": cfg.tent_mode,
                          "params": "affine+switch" if cfg.tent_switch else "affine", "steps": 1,
                          "parameters": sum(p.numel() for p in adaptation.tent_parameters(model, cfg.tent_switch))}
    return fields
