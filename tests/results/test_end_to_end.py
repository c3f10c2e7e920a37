"""The collector on folders written by the real trainer: a finished SN run, a diverged BN run, a stopped GN run."""
import csv
import io
import json

import pytest

from tests.engine.tiny import run, write_config
from tests.results.fixtures import collect, parse_tables

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained_runs(tmp_path_factory, dataset):
    tmp = tmp_path_factory.mktemp("e2e")
    data = dataset
    common = ["log.tensorboard=false"]
    sn = write_config(str(tmp), data, norm="sn", epochs=1, name="sn.yaml")
    run("train.py", ["--config", sn, "log.name=sn_4x2"] + common)
    bn = write_config(str(tmp), data, norm="bn", epochs=1, name="bn.yaml")
    proc = run("train.py", ["--config", bn, "log.name=bn_4x2", "optim.lr=1e30", "schedule.warmup_epochs=0"] + common,
               check=False)
    assert proc.returncode != 0 and "non-finite" in proc.stderr
    gn = write_config(str(tmp), data, norm="gn", epochs=1, name="gn.yaml")
    run("train.py", ["--config", gn, "log.name=gn_4x2", "model.width=8", "norm.groups=2", "train.max_iters=1"] + common)
    return {"runs": tmp / "runs", "data": data}


def test_collector_reads_what_the_trainer_wrote(trained_runs, tmp_path):
    final = json.loads((trained_runs["runs"] / "sn_4x2" / "final.json").read_text())
    proc = collect([trained_runs["runs"], "--out", tmp_path])
    tables = parse_tables(proc.stdout)
    sn_table = f"ResNet-18 v1, width 4, small stem, 4 classes, data {trained_runs['data']}"
    gn_table = f"ResNet-18 v1, width 8, small stem, 4 classes, data {trained_runs['data']}"
    assert set(tables) == {sn_table, gn_table}  # the GN run's width differs: another model
    # the BN run was made to diverge by another recipe, which the row labels name
    sn_row, bn_row = "SN (optim.lr=0.5, schedule.warmup_epochs=0.5)", "BN (optim.lr=1e+30, schedule.warmup_epochs=0.0)"
    assert tables[sn_table][sn_row]["(4,2)"] == f"{final['top1']:.2f}"
    assert tables[sn_table][bn_row]["(4,2)"] == "diverged"
    assert tables[sn_table]["SN-BN"]["(4,2)"] == ""
    assert tables[gn_table]["GN"]["(4,2)"] == "incomplete"  # stopped by max_iters: no final.json
    rows = {r["run"]: r for r in csv.DictReader(io.StringIO((tmp_path / "results.csv").read_text()))}
    assert (rows["sn_4x2"]["status"], float(rows["sn_4x2"]["top5"])) == ("finished", final["top5"])
    assert (rows["sn_4x2"]["row"], rows["bn_4x2"]["row"], rows["gn_4x2"]["row"]) == (sn_row, bn_row, "GN")
    assert rows["sn_4x2"]["stat_groups"] == "4"  # (4, 2) emulated by one process
    assert rows["bn_4x2"]["status"] == "diverged" and rows["gn_4x2"]["status"] == "incomplete"
    assert len(final["switch_weights"]) == 20  # ResNet-18: stem, 8 blocks x 2, 3 projection shortcuts
    assert (tmp_path / "sn_importance.png").stat().st_size > 10_000
