"""A real Slurm cluster (munged + slurmctld + slurmd) on localhost, owned by the test process.

One node by default, named as this machine. With nodes=N: N nodes n1..nN, one slurmd each (`slurmd -N nI`, each
on its own port, as slurm.conf allows for several slurmd on one host), all on this machine and each offering its
whole hardware, so that a multi-node job really gets N nodes with one job step task per node.
Everything lives in one folder: munge key, sockets, slurm.conf, state, spool and logs. The daemons run in
the foreground as our children, so they are stopped by the process ids we hold and nothing else.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest

DAEMONS = ("munged", "slurmctld", "slurmd")
SBIN = ("/usr/sbin", "/sbin")  # Debian puts the daemons there, often off a non-root PATH


def find_daemon(name):
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def missing_daemons():
    """Names of the Slurm/munge programs that are not installed (empty: a cluster can be started)."""
    return [name for name in DAEMONS + ("sbatch", "squeue", "sinfo", "scontrol", "scancel") if not find_daemon(name)]


def unavailable_reason():
    """Why no cluster can be started here (None: it can): missing programs, or not running as root."""
    missing = missing_daemons()
    if missing:
        return (f"Slurm is not installed ({', '.join(missing)} not found): "
                "apt-get install slurm-wlm munge (.ci/run does)")
    if os.geteuid() != 0:
        # slurmd launches every job step as the submitting user, which needs root (SlurmdUser=root below)
        return f"slurmd must run as root to start job steps, and these tests run as uid {os.geteuid()}"
    return None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def detected_node_line():
    """`slurmd -C`'s NodeName line: the CPUs, sockets, cores and memory this machine really has."""
    out = subprocess.run([find_daemon("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    line = next((l for l in out.splitlines() if l.startswith("NodeName=")), None)
    if line is None:
        raise RuntimeError(f"slurmd -C printed no NodeName line:\n{out}")
    return line


SLURM_CONF = """\
ClusterName=pytest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser={user}
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={munge_socket},cred_expire=5
CredType=cred/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
SchedulerParameters=sched_interval=1
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=600
FirstJobId={first_job_id}
{node_lines}
PartitionName=debug Nodes={nodes} Default=YES MaxTime=INFINITE State=UP
"""


class LocalSlurm:
    """start() brings the cluster up and waits until every node is idle; env is what client commands need."""

    def __init__(self, root, nodes=1, first_job_id=1):
        self.root = os.path.abspath(root)
        self.procs = {}
        self.node_line = detected_node_line()
        self.node = self.node_line.split()[0].split("=", 1)[1]  # this machine's host name
        self.cpus = int(dict(kv.split("=", 1) for kv in self.node_line.split())["CPUs"])
        self.nodes = [self.node] if nodes == 1 else [f"n{i}" for i in range(1, nodes + 1)]
        self.first_job_id = first_job_id
        self.conf = os.path.join(self.root, "slurm.conf")
        self.munge_socket = os.path.join(self.root, "munge", "munge.socket")
        self.env = {**os.environ, "SLURM_CONF": self.conf,
                    "PATH": os.pathsep.join([os.environ.get("PATH", "")] + list(SBIN))}

    def start(self, timeout=90):
        for sub in ["munge", "state", "run", "log"] + [os.path.join("spool", n) for n in self.nodes]:
            os.makedirs(os.path.join(self.root, sub), exist_ok=True)
        os.chmod(os.path.join(self.root, "munge"), 0o755)  # munged wants its socket folder searchable by all
        self._start_munge()
        hardware = self.node_line.split(maxsplit=1)[1]
        if len(self.nodes) == 1:
            node_lines = f"{self.node_line} NodeAddr=127.0.0.1 State=UNKNOWN"
        else:  # the real host name as each node's NodeHostname, as for several slurmd on one host
            node_lines = "\n".join(f"NodeName={n} NodeHostname={self.node} NodeAddr=127.0.0.1 Port={free_port()} "
                                   f"{hardware} State=UNKNOWN" for n in self.nodes)
        with open(self.conf, "w") as f:
            f.write(SLURM_CONF.format(host=self.node, nodes=",".join(self.nodes), node_lines=node_lines,
                                      root=self.root, user=getpass.getuser(), munge_socket=self.munge_socket,
                                      ctld_port=free_port(), slurmd_port=free_port(),
                                      first_job_id=self.first_job_id))
        self._spawn("slurmctld", [find_daemon("slurmctld"), "-D", "-f", self.conf])
        for n in self.nodes:
            self._spawn("slurmd" if len(self.nodes) == 1 else f"slurmd-{n}",
                        [find_daemon("slurmd"), "-D", "-f", self.conf, "-N", n])
        self._wait_idle(timeout)
        return self

    def _start_munge(self):
        key = os.path.join(self.root, "munge", "munge.key")
        subprocess.run([find_daemon("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True) \
            if find_daemon("mungekey") else _random_key(key)
        os.chmod(key, 0o600)
        m = os.path.join(self.root, "munge")
        self._spawn("munged", [find_daemon("munged"), "-F", "-f", f"--key-file={key}",
                               f"--socket={self.munge_socket}", f"--pid-file={m}/munged.pid",
                               f"--log-file={m}/munged.log", f"--seed-file={m}/munged.seed"])
        deadline = time.monotonic() + 20
        while not os.path.exists(self.munge_socket):
            self._check_alive()
            if time.monotonic() > deadline:
                raise RuntimeError("munged did not create its socket in 20 s\n" + self.log_tails())
            time.sleep(0.1)

    def _spawn(self, name, argv):
        out = open(os.path.join(self.root, "log", f"{name}.out"), "w")
        self.procs[name] = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)
        out.close()

    def _check_alive(self):
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with code {proc.returncode}\n" + self.log_tails())

    def _wait_idle(self, timeout):
        deadline = time.monotonic() + timeout
        state = ""
        while time.monotonic() < deadline:
            self._check_alive()
            res = self.client(["sinfo", "-h", "-N", "-o", "%T"], check=False)
            state = res.stdout.strip()
            if res.returncode == 0 and state.split() == ["idle"] * len(self.nodes):
                return
            time.sleep(0.5)
        raise RuntimeError(f"the nodes are not idle after {timeout} s (sinfo: {state!r})\n" + self.log_tails())

    def client(self, argv, check=True, timeout=60, cwd=None):
        """Run a Slurm client command (sbatch, squeue, ...) against this cluster."""
        res = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=timeout, cwd=cwd)
        if check and res.returncode:
            raise RuntimeError(f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip()}")
        return res

    def queue(self):
        """Ids of the jobs (array tasks included) that are pending or running."""
        out = self.client(["squeue", "-h", "-r", "-o", "%i"]).stdout
        return out.split()

    def wait_empty(self, timeout):
        deadline = time.monotonic() + timeout
        while self.queue():
            self._check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(f"jobs still queued after {timeout} s: {self.queue()}\n" + self.log_tails())
            time.sleep(1)

    def log_tails(self, lines=25):
        parts = []
        for name in sorted(os.listdir(os.path.join(self.root, "log"))):
            with open(os.path.join(self.root, "log", name), errors="replace") as f:
                tail = f.read().splitlines()[-lines:]
            parts.append(f"--- {name} (last {len(tail)} lines)\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self):
        """Cancel what is left, then stop the daemons we started, by their process ids."""
        started = len(self.procs) == len(DAEMONS) - 1 + len(self.nodes)  # one slurmd per node
        if started and all(p.poll() is None for p in self.procs.values()):
            try:
                jobs = self.queue()
                if jobs:
                    self.client(["scancel"] + jobs, check=False)
                    self.wait_empty(60)
            except (RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                pass
        for name in reversed(list(self.procs)):
            proc = self.procs[name]
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def job_fields(cluster, job_id):
    """scontrol's key=value fields of a job (each array task: a list of dicts)."""
    text = cluster.client(["scontrol", "show", "job", "-o", job_id]).stdout
    return [dict(kv.split("=", 1) for kv in line.split() if "=" in kv) for line in text.splitlines() if line.strip()]


def running_cluster(root, **kwargs):
    """A started LocalSlurm(root, **kwargs) for a pytest fixture to yield from and stop(); skips where no cluster
    can run here (pytest -ra prints why), fails with the daemons' logs where one does not come up."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    slurm = LocalSlurm(root, **kwargs)
    slurm.env["PYTHON"] = sys.executable  # the jobs run train.py with the interpreter running the tests
    try:
        return slurm.start()
    except Exception as e:
        slurm.stop()
        pytest.fail(f"the local Slurm cluster did not start: {e}", pytrace=False)


def _random_key(path):
    with open(path, "wb") as f:
        f.write(os.urandom(1024))
