"""Two nodes on this machine, each a torchrun agent with one process, meeting at a c10d rendezvous that assigns
their node ranks: started directly, and as scripts/slurm/train.sbatch's two-node job on a local two-node Slurm
cluster (two slurmd on this host). Either run trains the setting (4, 2) as 2 processes that each emulate 2 GPUs,
and must equal one process emulating all 4 (as test_train's emulation test does on one node); the control
setting (2, 4) must differ."""
import json
import os
import random
import re
import socket
import subprocess
import sys

import pytest
import torch

from tests.engine.tiny import REPO, final_state, run, write_config
from tests.scripts.slurm_cluster import free_port, job_fields, running_cluster

pytestmark = pytest.mark.multiprocess

SBATCH_SCRIPT = os.path.join(REPO, "scripts", "slurm", "train.sbatch")
OVERRIDES = ["model.dropout=0", "log.tensorboard=false"]
# torchrun's agents log the rendezvous result (node rank and count) at INFO
AGENT_ENV = {"LOGLEVEL": "INFO", "OMP_NUM_THREADS": "1", "PYTHONPATH": REPO}


def two_node_config(tmp_path, dataset):
    return write_config(str(tmp_path), dataset, gpus=4, b=2, epochs=1)


@pytest.fixture(scope="module")
def emulated(tmp_path_factory, dataset):
    """Final weights of (4, 2) in one process emulating 4 GPUs, and of the control setting (2, 4)."""
    tmp = tmp_path_factory.mktemp("emulated")
    weights = {}
    for name, gpus, b in (("one_proc", 4, 2), ("other_setting", 2, 4)):
        cfg = write_config(str(tmp), dataset, gpus=gpus, b=b, epochs=1, name=f"{name}.yaml")
        run("train.py", ["--config", cfg, *OVERRIDES, f"log.name={name}"])
        weights[name] = final_state(tmp / "runs" / name)[1]["model"]
    return weights


def assert_trained_as_emulated(run_dir, emulated):
    """A finished two-process (4, 2) run whose weights equal the one emulating process's, and not the control's."""
    final = json.loads((run_dir / "final.json").read_text())
    assert final["status"] == "finished" and final["iterations"] == 6, final
    assert {k: final["setting"][k] for k in ("gpus", "samples_per_gpu", "world", "stat_groups")} == \
        {"gpus": 4, "samples_per_gpu": 2, "world": 2, "stat_groups": 2}
    weights = final_state(run_dir)[1]["model"]
    floats = [k for k, v in emulated["one_proc"].items() if v.is_floating_point()]
    for key in floats:
        torch.testing.assert_close(weights[key], emulated["one_proc"][key], rtol=1e-4, atol=1e-5, msg=key)
    assert max((weights[k] - emulated["other_setting"][k]).abs().max().item() for k in floats) > 1e-3


def node_ranks(log):
    """The node ranks torchrun's rendezvous gave the agents whose log this is, in order, and their node counts."""
    return [int(r) for r in re.findall(r"group_rank=(\d+)", log)], set(re.findall(r"group_world_size=(\d+)", log))


def test_two_torchrun_agents_at_a_c10d_rendezvous_equal_one_emulating_process(tmp_path, dataset, emulated):
    """Two agents as two nodes would start them: --nnodes 2, no --node_rank (the rendezvous assigns it)."""
    cfg = two_node_config(tmp_path, dataset)
    port = free_port()
    argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1", "--rdzv_backend=c10d",
            f"--rdzv_endpoint=localhost:{port}", f"--rdzv_id=pytest-{port}", "--rdzv_conf=join_timeout=120",
            os.path.join(REPO, "train.py"), "--config", cfg, *OVERRIDES]
    logs = [tmp_path / f"agent{i}.log" for i in (0, 1)]
    agents = []
    try:
        for log in logs:
            with open(log, "w") as out:
                agents.append(subprocess.Popen(argv, cwd=REPO, env={**os.environ, **AGENT_ENV}, stdout=out,
                                               stderr=subprocess.STDOUT))
        codes = [agent.wait(timeout=300) for agent in agents]
    finally:
        for agent in agents:
            if agent.poll() is None:
                agent.kill()
                agent.wait()
    texts = [log.read_text() for log in logs]
    assert codes == [0, 0], "\n".join(t[-4000:] for t in texts)
    ranks = [node_ranks(t) for t in texts]
    assert sorted(r for r, _ in ranks) == [[0], [1]] and all(n == {"2"} for _, n in ranks), ranks
    main = texts[[r for r, _ in ranks].index([0])]  # global rank 0 runs on node 0 and prints
    assert "setting (4, 2) on 2 process(es)" in main and "each process emulates 2 GPUs (stat_groups=2)" in main
    assert_trained_as_emulated(tmp_path / "runs" / "run", emulated)


def job_id_for_a_free_rendezvous_port():
    """A first job id whose rendezvous port (train.sbatch: 20000 + SLURM_JOB_ID % 12000) is free right now."""
    for _ in range(100):
        port = random.randrange(20001, 32000)
        with socket.socket() as s:
            try:
                s.bind(("", port))
            except OSError:
                continue
        return port - 20000, port
    raise RuntimeError("no free port in 20001..31999")


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    job_id, port = job_id_for_a_free_rendezvous_port()
    slurm = running_cluster(tmp_path_factory.mktemp("slurm2"), nodes=2, first_job_id=job_id)
    slurm.rendezvous_port = port
    yield slurm
    slurm.stop()


@pytest.mark.slurm
def test_train_sbatch_two_node_job_runs_torchrun_on_each_node_and_equals_one_emulating_process(
        two_nodes, tmp_path, dataset, emulated):
    """A real two-node allocation: train.sbatch's own srun starts its torchrun command line once per node."""
    cfg = two_node_config(tmp_path, dataset)
    log = tmp_path / "job.out"
    job = two_nodes.client(["sbatch", "--parsable", "--nodes=2", "--ntasks-per-node=1", f"--output={log}",
                            "--export=ALL,LOGLEVEL=INFO", SBATCH_SCRIPT, cfg, *OVERRIDES], cwd=REPO).stdout.strip()
    two_nodes.wait_empty(300)
    text = log.read_text() if log.exists() else "(no job output)"
    [fields] = job_fields(two_nodes, job)
    assert (fields["JobState"], fields["ExitCode"]) == ("COMPLETED", "0:0"), text + "\n" + two_nodes.log_tails()
    assert (fields["NumNodes"], fields["NodeList"]) == ("2", "n[1-2]")
    # the head node's NodeHostname is this machine's name: its agent hosts the store, the other's connects
    assert f"on 2 node(s) x 1 process(es), rendezvous {two_nodes.node}:{two_nodes.rendezvous_port}," in text, text
    ranks, counts = node_ranks(text)
    assert sorted(ranks) == [0, 1] and counts == {"2"}, text
    assert "setting (4, 2) on 2 process(es)" in text and "run ended with exit code 0, final.json written" in text
    assert_trained_as_emulated(tmp_path / "runs" / "run", emulated)
