"""Run logging on rank 0: concise stdout, a JSON-lines file and TensorBoard (tensorboardX)."""
import json
import os
import sys
import time


class RunLogger:
    """Writes scalars to metrics.jsonl and TensorBoard; other ranks get a silent logger."""

    def __init__(self, folder, enabled, tensorboard=True):
        self.enabled = enabled
        self.folder = folder
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        os.makedirs(folder, exist_ok=True)
        self._jsonl = open(os.path.join(folder, "metrics.jsonl"), "a", buffering=1)
        if tensorboard:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(os.path.join(folder, "tb"))

    def info(self, message):
        if self.enabled:
            print(message, flush=True)

    def scalars(self, step, values, kind):
        """Log a dict of scalars under `kind` (e.g. train, val, sn) at global step `step`."""
        if not self.enabled:
            return
        self._jsonl.write(json.dumps({"kind": kind, "step": step, "time": time.time(), **values}) + "\n")
        if self._tb is not None:
            for key, value in values.items():
                if isinstance(value, (int, float)):
                    self._tb.add_scalar(f"{kind}/{key}", value, step)

    def close(self):
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()

    @staticmethod
    def is_tty():
        return sys.stdout.isatty()
