"""Misuse of scripts/benchmark.py ends with one clear line and exit code 2."""
import pytest
import torch

from benchmarks.cli import main


@pytest.mark.parametrize("argv, message", [
    (["--device", "cpu", "--variants", "gn,sn-reference"], "--variants must include bn"),
    (["--device", "cpu", "--warmup", "0"], "--warmup must be >= 1"),
    (["--device", "cpu", "--repeats", "0"], "--repeats must be >= 1"),
    (["--device", "cpu", "--min-sample-ms", "-1"], "--min-sample-ms must be >= 0"),
    (["--device", "cpu", "--batch", "0"], "--layer-batch and --batch need values >= 1"),
    (["--device", "cpu", "--json", "/nonexistent-folder/out.json"], "its folder does not exist"),
])
def test_bad_settings(argv, capsys, message):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_cuda_requested_without_cuda(capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so --device cuda is valid here")
    assert main(["--device", "cuda"]) == 2
    assert "use --device cpu" in capsys.readouterr().err


def test_unknown_list_values_are_rejected_by_the_parser(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--precision", "fp16"])
    assert exit_info.value.code == 2 and "fp16" in capsys.readouterr().err
