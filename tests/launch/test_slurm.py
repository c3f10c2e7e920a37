"""The Slurm side of a sweep without Slurm: the cells file train.sbatch reads, the job registry, sbatch's output."""
import os
import subprocess

import pytest

from launch import slurm, sweep as sw
from tests.launch.sweep_files import SWEEP, write_yaml


def test_cells_file_lines_hold_the_train_arguments(tmp_path):
    sweep = write_yaml(tmp_path, SWEEP.replace("optim.lr=0.2", "'schedule.milestones=[1, 2]'"))
    cells = sw.expand(sw.load_sweep(sweep), str(tmp_path / "o"))
    path = slurm.write_cells_file(str(tmp_path / "sub"), "table-1x8", cells)
    # two files in the same second under the same job name: distinct files, neither overwritten
    other = slurm.write_cells_file(str(tmp_path / "sub"), "table-1x8", cells[:1])
    assert other != path and sorted(os.listdir(tmp_path / "sub")) == sorted(map(os.path.basename, (path, other)))
    assert os.path.basename(path).startswith("table-1x8-") and path.endswith(".cells")
    assert len(open(other).read().splitlines()) == 1
    # read exactly as train.sbatch does: line (task + 1), split on tabs by bash's read -a
    script = 'IFS=$\'\\t\' read -r -a f <<<"$(sed -n "$(($1 + 1))p" "$2")"; printf "%s\\n" "${f[@]}"'
    for i, cell in enumerate(cells):
        out = subprocess.run(["bash", "-c", script, "-", str(i), path], capture_output=True, text=True, check=True)
        assert out.stdout.splitlines() == [cell.run_name, cell.config, *cell.overrides]
    tabbed = [sw.Cell("x", "c.yaml", ("a=1\t2",), "d")]
    with pytest.raises(sw.SweepError, match="holds a tab or newline"):
        slurm.write_cells_file(str(tmp_path / "sub"), "t", tabbed)


def test_queued_runs_come_from_the_registry_and_squeue(tmp_path):
    registry = str(tmp_path / "jobs.tsv")
    cells = [sw.Cell(n, "c", (), "d") for n in ("a", "b", "c")]
    slurm.record_jobs(registry, "41", cells[:2])
    slurm.record_jobs(registry, "57", cells[2:])
    assert slurm.queued_runs(registry, ["41_1", "57_0", "99_0"]) == {"b": "41_1", "c": "57_0"}
    assert slurm.parse_job_id("123;cluster\n") == "123"
