"""examples/digits.py: the command line, a reduced run end to end, determinism, and the memory
measurement (a fresh process per model)."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

pytest.importorskip("sklearn")

_PATH = Path(__file__).resolve().parent.parent / "examples" / "digits.py"


@pytest.fixture(scope="module")
def digits():
    spec = importlib.util.spec_from_file_location("digits_example", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_help(digits, capsys):
    with pytest.raises(SystemExit) as e:
        digits.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ["--quick", "--seed", "--epochs", "--out"]:
        assert flag in out
    with pytest.raises(SystemExit):
        digits.main(["--depth", "1"])
    assert "--depth == 1, must be >= 2" in capsys.readouterr().err


def test_data_split(digits):
    xtr, ytr, xte, yte = digits.load_data(0)
    assert xtr.shape == (1437, 1, 8, 8) and xte.shape == (360, 1, 8, 8)
    assert abs(float(xtr.mean())) < 1e-5 and abs(float(xtr.std()) - 1) < 1e-3  # standardised
    assert torch.bincount(yte).min() >= 35  # stratified: 36 or 37 per class


def test_quick_run_end_to_end(digits, tmp_path):
    out = tmp_path / "digits.json"
    argv = ["--quick", "--epochs", "1", "--finetune-epochs", "1", "--depth", "2", "--no-memory",
            "--no-progress", "--out", str(out)]
    assert digits.main(argv) == 0
    r = json.loads(out.read_text())
    assert set(r["models"]) == {"resnet", "momentum"}
    for m in r["models"].values():
        assert 0.0 <= m["test_acc"] <= 1.0 and len(m["epoch_time_s"]) == 1
    assert r["models"]["resnet"]["params"] == r["models"]["momentum"]["params"]  # same weights
    ft = r["finetune"]
    # gamma = 0 conversion of the trained ResNet computes the same network: same predictions
    assert ft["converted_gamma0_acc"] == ft["resnet_acc"]
    assert 0.0 <= ft["converted_after_acc"] <= 1.0


def test_training_is_deterministic(digits):
    data = digits.load_data(1)
    data = (data[0][:128], data[1][:128], data[2][:64], data[3][:64])
    runs = []
    for _ in range(2):
        net = digits.build("momentum", 4, 2, 0.9, seed=1)
        _, acc = digits.train({"m": net}, data, 1, 0.05, 64, 1, torch.device("cpu"), "t", progress=False)["m"]
        runs.append((acc, torch.cat([p.detach().flatten() for p in net.parameters()])))
    assert runs[0][0] == runs[1][0] and torch.equal(runs[0][1], runs[1][1])


@pytest.mark.slow  # two fresh processes (torch imports): ~10 s on an idle 2-core machine
def test_memory_exact_below_autograd(digits):
    """24 blocks per stage at width 8, batch 128: the ResNet keeps ~1.5 MiB of activations per
    block, the exact Momentum ResNet only its int64 states and each stage's first block."""
    kw = dict(width=8, depth=24, gamma=0.9, batch_size=128, seed=0, device="cpu", threads=1)
    res = digits.measure_memory("resnet", **kw)
    mom = digits.measure_memory("momentum", **kw)
    assert res["kind"] == "resnet" and mom["kind"] == "momentum"
    assert res["step_peak_mib"] > 2 * mom["step_peak_mib"] > 0
