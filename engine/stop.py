"""Stop requests: SIGTERM, SIGUSR1 and SIGINT (Ctrl-C), and the death of the torchrun agent.

A request is acted upon at the next training step by every rank together (a checkpoint, then exit
130 for SIGINT, 143 otherwise); a second Ctrl-C aborts at once. Workers started by torchrun live in
their own session, so a killed agent sends them nothing: each step compares the parent pid with the
agent's and treats a change as a stop request.
"""
import os
import signal
import threading

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
AGENT_DIED = "torchrun agent died"


class StopWatch:
    """Records the first stop request; `reason` is None until one arrives."""

    def __init__(self):
        self.reason = None
        self.agent_pid = os.getppid() if "TORCHELASTIC_RUN_ID" in os.environ else None

    def install(self):
        """Route the stop signals here (signal handlers can only be set from the main thread)."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self.on_signal)

    def on_signal(self, signum, frame=None):
        if signum == signal.SIGINT and self.reason == signal.SIGINT.name:
            raise KeyboardInterrupt  # the second Ctrl-C: abort now (checkpoint writes stay atomic)
        self.reason = self.reason or signal.Signals(signum).name

    def requested(self):
        """True once a signal arrived or the torchrun agent that started this process has died."""
        if self.reason is None and self.agent_pid is not None and os.getppid() != self.agent_pid:
            self.reason = AGENT_DIED
        return self.reason is not None

    @property
    def exit_code(self):
        return 128 + signal.SIGINT if self.reason == signal.SIGINT.name else 128 + signal.SIGTERM

    @staticmethod
    def ignore_all():
        """After a finished run: no stop signal may turn the process's shutdown into a crash."""
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, signal.SIG_IGN)
