"""examples/mnist1d_momentum.py: the MNIST-1D data (generated offline), the networks, the quick run
of all four experiments end to end (trained models beat chance, the JSON has the documented
structure, the exact Momentum ResNet needs less memory than the ResNet at the deepest net), and
the figures momentum_influence and learning_curves drawn from that run's cache."""

import json
import random

import numpy as np
import pytest
import torch

pytest.importorskip("mnist1d")

from examples import mnist1d_momentum as ex  # noqa: E402


def test_data_is_generated_offline_and_restores_global_rng(monkeypatch):
    import requests

    def no_network(*a, **k):
        raise AssertionError("the mnist1d download path was called")

    monkeypatch.setattr(requests, "get", no_network)
    monkeypatch.setattr(ex, "_DATA", {})  # force a fresh generation
    random.seed(5)
    np.random.seed(5)
    before = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    xtr, ytr, xte, yte = ex.load_mnist1d()
    assert (random.random(), np.random.rand()) == before  # the generator's reseeding is undone
    assert xtr.shape == (4000, 1, 40) and xte.shape == (1000, 1, 40)
    assert xtr.dtype == torch.float32 and ytr.dtype == torch.int64
    assert sorted(torch.unique(ytr).tolist()) == list(range(10))
    assert torch.bincount(ytr).min() >= 350  # 500 per class in all, shuffled before the 80/20 split
    monkeypatch.setattr(ex, "_DATA", {})
    again = ex.load_mnist1d()
    assert torch.equal(again[0], xtr) and torch.equal(again[3], yte)  # seed 42: the same data each time
    a = ex.load_mnist1d(range(5))
    assert set(a[1].tolist()) == set(range(5)) and len(a[0]) + len(ex.load_mnist1d(range(5, 10))[0]) == 4000
    with pytest.raises(ValueError, match="subset of 0..9"):
        ex.load_mnist1d([10])


def test_networks_and_their_errors():
    res, rev = ex.build("resnet", 8, 3), ex.build("revnet", 8, 3)
    # RevNet F and G (width/2 -> width -> width/2) carry the ResNet block's conv weights: the
    # counts differ only by BatchNorm parameters (6 * width against 4 * width per layer)
    assert ex.n_params(rev) - ex.n_params(res) == 3 * 2 * 8
    mom = ex.build("momentum", 8, 3, gamma=0.9)
    x = torch.randn(4, 1, 40)
    for net in (res, rev, mom, ex.build("checkpoint", 8, 3)):
        net.eval()
        assert net(x).shape == (4, 10)
    # the Momentum ResNet is converted from the seeded ResNet: the same weights, same names
    assert all(torch.equal(a, b) for a, b in zip(res.state_dict().values(), mom.state_dict().values()))
    with pytest.raises(ValueError, match="kind"):
        ex.build("densenet", 8, 3)
    with pytest.raises(ValueError, match="depth"):
        ex.build("resnet", 8, 0)


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        ex.main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--quick", "--seed", "--seeds", "--epochs", "--depths", "--out"):
        assert flag in out
    with pytest.raises(SystemExit):
        ex.main(["--epochs", "0"])
    assert "--epochs == 0, must be >= 1" in capsys.readouterr().err


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """The CI run: ``--quick`` (about 40 s on an idle 2-core machine, most of it fresh processes
    for the memory measurements)."""
    d = tmp_path_factory.mktemp("mnist1d")
    out = d / "results.json"
    assert ex.main(["--quick", "--no-progress", "--cache", str(d / "cache"), "--out", str(out)]) == 0
    return json.loads(out.read_text()), d / "cache"


def test_quick_accuracy_structure_and_above_chance(quick):
    r, _ = quick
    acc = r["accuracy"]["accuracy"]
    assert list(acc) == ["2", "6"]
    for depth, a in acc.items():
        assert set(a) == {"resnet", "momentum", "revnet"}
        assert list(a["momentum"]) == ["0.0", "0.5", "0.9", "0.99"]
        assert a["momentum"]["0.0"] == a["resnet"]  # gamma = 0 is the ResNet
        for s in [a["resnet"], a["revnet"], *a["momentum"].values()]:
            assert set(s) == {"mean", "std", "min", "max", "values"} and len(s["values"]) == 1
            # 10 classes, 1000 test sequences: chance is 10% with a binomial std of 1%; two
            # epochs of the smallest nets reach ~30%
            assert s["mean"] > 0.2, (depth, s)
    curves = r["curves"]
    assert curves["depth"] == 6 and set(curves["models"]) == {"resnet", "momentum_0.9"}
    for m in curves["models"].values():
        for what in ("train_acc", "test_acc", "loss"):
            assert len(m[what]["mean"]) == 2
    # the curves are the same runs: their last test accuracy is the table's
    assert curves["models"]["resnet"]["test_acc"]["mean"][-1] == acc["6"]["resnet"]["mean"]
    assert curves["models"]["momentum_0.9"]["test_acc"]["mean"][-1] == acc["6"]["momentum"]["0.9"]["mean"]
    assert set(r["published"]) >= {"logistic regression", "MLP", "CNN", "GRU"}


def test_quick_memory(quick):
    r, _ = quick
    m = r["memory"]
    assert m["depths"] == [6, 24] and set(m["by_depth_mib"]) == set(ex.MEMORY_METHODS)
    res, mom, rev = m["by_depth_mib"]["resnet"], m["by_depth_mib"]["momentum"], m["by_depth_mib"]["revnet"]
    # at the deepest net (24 blocks) the exact modes store no activations: at batch 128, width 8,
    # the ResNet keeps ~0.6 MiB per block, the exact Momentum ResNet a depth-independent ~6 MiB
    assert mom[-1] < 0.5 * res[-1] and rev[-1] < 0.5 * res[-1]
    assert res[-1] > 2.5 * res[0]  # 4x the depth: stored activations grow with it
    assert mom[-1] < 1.3 * mom[0] + 0.5  # flat up to the ~0.5 MiB noise of an RSS measurement
    for k, lb in m["largest_batch"].items():
        assert lb["batch"] in (None, *m["batches"])
        fits = [b for b, p in zip(m["batches"], m["by_batch_mib"][k]) if p <= m["budget_mib"]]
        assert lb["batch"] == (fits[-1] if fits else None)


def test_quick_finetune(quick):
    r, _ = quick
    f = r["finetune"]
    a = {k: v["mean"] for k, v in f["accuracy"].items()}
    assert set(a) == {"pretrained_acc_0_4", "momentum_0.9_converted_acc_0_4", "resnet_acc_5_9",
                      "momentum_0.9_acc_5_9", "scratch_resnet_acc_5_9"}
    # 5 classes, ~500 test sequences: chance is 20% with a binomial std of 1.8%
    assert a["pretrained_acc_0_4"] > 0.3 and a["resnet_acc_5_9"] > 0.28 and a["momentum_0.9_acc_5_9"] > 0.28
    mem = f["step_peak_mib"]
    assert set(mem) == {"resnet", "momentum_0.9"} and mem["resnet"] > 0 and mem["momentum_0.9"] > 0


def test_figures_from_the_quick_run(quick):
    """Both figures draw from the run's cache (nothing retrained) and report the numbers of the JSON."""
    import matplotlib.pyplot as plt

    from figures import FIGURES, learning_curves, momentum_influence

    r, cache = quick
    assert FIGURES["momentum_influence"] == "momentum_influence" and FIGURES["learning_curves"] == "learning_curves"
    data = momentum_influence.compute(quick=True, seed=0, cache=cache)
    assert data["accuracy"] == r["accuracy"]["accuracy"]
    nums = momentum_influence.numbers(data)
    six = nums["by_depth"]["6"]["accuracy"]
    assert set(six) == {"resnet", "momentum", "revnet"} and list(six["momentum"]) == ["0.0", "0.5", "0.9", "0.99"]
    assert six["resnet"] == round(100 * r["accuracy"]["accuracy"]["6"]["resnet"]["mean"], 2)
    json.dumps(nums)
    plt.close(momentum_influence.plot(data))
    lc = learning_curves.compute(quick=True, seed=0, cache=cache)
    assert lc["models"]["resnet"]["test_acc"] == r["curves"]["models"]["resnet"]["test_acc"]
    json.dumps(learning_curves.numbers(lc))
    plt.close(learning_curves.plot(lc))
