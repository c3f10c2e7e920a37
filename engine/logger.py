"""Run logging on rank 0: concise stdout, a JSON-lines file and TensorBoard (tensorboardX)."""
import glob
import json
import os
import sys
import time

from .run_folder import truncate_events, truncate_jsonl


class RunLogger:
    """Writes scalars to metrics.jsonl and TensorBoard; other ranks get a silent logger.

    `open(step)` starts the files at the step training continues from: rows and events of later
    steps (written before a stop and re-run after the resume) are removed first, so each step is
    logged exactly once. `flush()` makes everything logged so far durable (called with each checkpoint).
    """

    def __init__(self, folder, enabled, tensorboard=True):
        self.enabled = enabled
        self.folder = folder
        self.tensorboard = tensorboard
        self._jsonl = None
        self._tb = None

    def open(self, step):
        """Truncate the logs to `step` and open them for appending; returns notes (what was removed, a missing
        tensorboardX) as text, or None."""
        if not self.enabled:
            return None
        removed = truncate_jsonl(os.path.join(self.folder, "metrics.jsonl"), step)
        self._jsonl = open(os.path.join(self.folder, "metrics.jsonl"), "a", buffering=1)
        cut, notes = 0, []
        writer = _summary_writer() if self.tensorboard else None
        if self.tensorboard and writer is None:
            notes.append("note: tensorboardX is not installed: no TensorBoard events are written (and earlier ones "
                         "are left as they are); pip install tensorboardX, or set log.tensorboard=false")
        if writer is not None:
            for path in sorted(glob.glob(os.path.join(self.folder, "tb", "events.out.tfevents.*"))):
                cut += truncate_events(path, step)
            self._tb = writer(os.path.join(self.folder, "tb"), purge_step=step + 1 if step else None)
        if removed or cut:
            notes.append(f"logs continue from iteration {step}: removed {removed} metrics.jsonl row(s) and "
                         f"{cut} TensorBoard byte(s) written after it")
        return "\n".join(notes) or None

    def flush(self):
        if self._jsonl is not None:
            self._jsonl.flush()
            os.fsync(self._jsonl.fileno())
        if self._tb is not None:
            self._tb.flush()

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


def _summary_writer():
    """tensorboardX's SummaryWriter class, or None where tensorboardX is not installed (an optional dependency)."""
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter
