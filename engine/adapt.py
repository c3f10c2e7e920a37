"""Test-time adaptation methods: how each batch of a test stream is predicted (docs/robustness.md)."""
import contextlib

import torch

from norms import adaptation

from .precision import autocast

METHODS = ("source", "batch", "prior", "adabn", "tent")
BATCH_METHODS = ("batch", "prior", "tent")        # their predictions depend on the test batch B
# AdaptConfig field -> the methods that use it; giving a field to any other method is an error (eval.py, sweeps)
USED_BY = {"batch": BATCH_METHODS, "prior": ("prior",), "tent_lr": ("tent",), "tent_momentum": ("tent",),
           "tent_mode": ("tent",), "tent_switch": ("tent",), "seed": METHODS}
TENT_LR, TENT_BATCH = 0.00025, 64                  # Tent's ImageNet SGD learning rate at batch 64 (Wang et al. 2021)


def tent_lr(cfg):
    """cfg.tent_lr, or Tent's ImageNet rate scaled linearly to the test batch: 0.00025 * B / 64."""
    return cfg.tent_lr if cfg.tent_lr is not None else TENT_LR * cfg.batch / TENT_BATCH


def entropy(logits):
    """Per-sample Shannon entropy (nats) of the softmax predictions."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


class Adapter:
    """Predicts test batches with one method (cfg: AdaptConfig); the model is restored when `close` runs.

    source: the running statistics. batch: each test batch's own statistics (prediction-time BN).
    prior: running and batch statistics mixed, N/(N+n) for the source. adabn: the running statistics
    re-estimated on the whole domain first (`prepare_domain`). tent: one SGD step per batch on the mean
    prediction entropy over the norm layers' affine parameters (and SN's switch logits with tent_switch),
    with prediction-time statistics; the batch is predicted by the forward pass that takes the step.
    """

    def __init__(self, model, cfg, device, precision="fp32"):
        if cfg.method not in METHODS:
            raise ValueError(f"unknown adaptation method {cfg.method!r}; choose one of {', '.join(METHODS)}")
        self.model, self.cfg, self.device, self.precision = model, cfg, device, precision
        self.stack = contextlib.ExitStack()
        self.layers = len(adaptation.statistics_layers(model))
        self.source_stats = adaptation.statistics_state(model)
        model.eval()
        if cfg.method in ("batch", "tent"):
            self.stack.enter_context(adaptation.use_test_statistics(model))
        elif cfg.method == "prior":
            self.stack.enter_context(adaptation.use_test_statistics(model, prior=cfg.prior))
        if cfg.method == "tent":
            self._start_tent()

    def _start_tent(self):
        self.params = adaptation.tent_parameters(self.model, switch=self.cfg.tent_switch)
        if not self.params:
            raise ValueError("tent: the model's norm layers have no affine parameters to adapt")
        chosen = {id(p) for p in self.params}
        frozen = [(p, p.requires_grad) for p in self.model.parameters()]
        self.stack.callback(lambda: [p.requires_grad_(flag) for p, flag in frozen])
        for p in self.model.parameters():
            p.requires_grad_(id(p) in chosen)
        self.initial = [p.detach().clone() for p in self.params]
        self.stack.callback(self._reset_parameters)
        self._reset_tent()

    @torch.no_grad()
    def _reset_parameters(self):
        for p, value in zip(self.params, self.initial, strict=True):
            p.copy_(value)

    def _reset_tent(self):
        self._reset_parameters()
        self.optimizer = torch.optim.SGD(self.params, lr=tent_lr(self.cfg), momentum=self.cfg.tent_momentum)

    def start_domain(self, batches=None):
        """Called before each domain's stream; adabn estimates the domain's statistics from `batches` (every
        rank passes its share; the statistics are all-reduced) and tent in mode "domain" starts afresh."""
        if self.cfg.method == "adabn":
            adaptation.load_statistics_state(self.model, self.source_stats)
            with autocast(self.precision, self.device.type):
                adaptation.estimate_population(self.model, batches)
        elif self.cfg.method == "tent" and self.cfg.tent_mode == "domain":
            self._reset_tent()

    def predict(self, images):
        """Logits (float32) of one test batch, adapting first where the method does."""
        if self.cfg.method != "tent":
            with torch.no_grad(), autocast(self.precision, self.device.type):
                return self.model(images).float()
        if self.cfg.tent_mode == "episodic":
            self._reset_tent()
        with torch.enable_grad(), autocast(self.precision, self.device.type):
            logits = self.model(images).float()
            loss = entropy(logits).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return logits.detach()

    def close(self):
        """Undo everything: test statistics off, parameters and running buffers as the checkpoint had them."""
        self.stack.close()
        adaptation.load_statistics_state(self.model, self.source_stats)
        self.model.zero_grad(set_to_none=True)
