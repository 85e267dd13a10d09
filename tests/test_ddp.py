"""DistributedDataParallel with every backward mode: two CPU processes (gloo), each on half the
batch, give the gradients of one process on the whole batch."""

import importlib.util
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import secondorder as so
from scripts.shared import Residual

D = torch.float64
WORLD = 2
BATCH = 8
MODES = ["autograd", "exact", "float"]


def _data():
    g = torch.Generator().manual_seed(11)
    return torch.randn(BATCH, 3, generator=g, dtype=D), torch.randn(BATCH, 2, generator=g, dtype=D)


def _model(kind):
    """Embedding -> depth-6 residual stack -> head; no BatchNorm (its batch statistics would be
    per process) and no dropout (its masks would be drawn per process)."""
    torch.manual_seed(3)
    fs = [nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 5)) for _ in range(6)]
    if kind == "converted":  # a plain stack of x + f(x) blocks, converted by to_momentum
        blocks = nn.Sequential(*[Residual(f) for f in fs])
        body = so.to_momentum(nn.Sequential(blocks), layers=["0"], gamma=0.8, backward="exact", keep_first=False)
    else:
        gamma = nn.Parameter(torch.tensor(0.8, dtype=D)) if kind != "autograd" else 0.8
        body = so.MomentumResNet(fs, gamma=gamma, backward=kind)
    return nn.Sequential(nn.Linear(3, 5), body, nn.Linear(5, 2)).to(D)


KINDS = MODES + ["converted"]


def _loss(net, x, y):
    return ((net(x) - y) ** 2).mean()


def _worker(rank, port, out_path):
    import os

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        x, y = _data()
        xs, ys = x.chunk(WORLD)[rank], y.chunk(WORLD)[rank]
        result = {}
        for kind in KINDS:
            net = _model(kind)
            ddp = nn.parallel.DistributedDataParallel(net)
            _loss(ddp, xs, ys).backward()  # DDP averages the two half-batch gradients
            result[kind] = {k: p.grad.clone() for k, p in net.named_parameters()}
        result["digits"] = _digits_epoch(rank)
        torch.save(result, f"{out_path}.{rank}")
    finally:
        dist.destroy_process_group()


def _digits_epoch(rank):
    """One epoch of examples/digits.py's Trainer under DDP (WORLD_SIZE/RANK as torchrun sets
    them) on random 8x8 images: returns this process's parameters after training."""
    import os

    os.environ["WORLD_SIZE"], os.environ["RANK"] = str(WORLD), str(rank)
    path = Path(__file__).resolve().parent.parent / "examples" / "digits.py"
    spec = importlib.util.spec_from_file_location("digits_example", path)
    digits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(digits)
    g = torch.Generator().manual_seed(0)
    data = (torch.randn(64, 1, 8, 8, generator=g), torch.randint(0, 10, (64,), generator=g),
            torch.randn(8, 1, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g))
    net = digits.build("momentum", 4, 2, 0.9, seed=0)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    digits.Trainer(net, data, 1, 0.05, 16, 0, torch.device("cpu")).epoch()
    return before, torch.cat([p.detach().flatten() for p in net.parameters()])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_grads(tmp_path_factory):
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = tmp_path_factory.mktemp("ddp") / "grads.pt"
    # fork: the children reuse the imported torch (spawn would import it again, ~10 s here)
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=WORLD, join=True, start_method="fork")
    return [torch.load(f"{out}.{rank}") for rank in range(WORLD)]


@pytest.mark.parametrize("kind", KINDS)
def test_ddp_matches_single_process(ddp_grads, kind):
    x, y = _data()
    net = _model(kind)
    _loss(net, x, y).backward()  # one process, the whole batch
    ref = {k: p.grad for k, p in net.named_parameters()}
    got = ddp_grads[0][kind]
    assert list(got) == list(ref)
    for k in ref:  # DDP gives both processes the same averaged gradient
        assert torch.equal(got[k], ddp_grads[1][kind][k])
    # half batches give the same per-sample arithmetic; the all-reduce sums in another order (float64
    # eps ~ 1e-16); exact mode may round a state differently by 2**-46 when BLAS blocks differ, and
    # float mode's inverse amplifies that by 0.8**-6 ~ 4: both far below 1e-11
    tol = 1e-13 if kind == "autograd" else 1e-11
    for k, r in ref.items():
        assert float((got[k] - r).norm() / r.norm()) <= tol, k
    if kind in ("exact", "float"):  # the learnable gamma's gradient is averaged too
        assert "1.gamma" in ref and float(ref["1.gamma"].abs()) > 0


def test_digits_trainer_under_ddp(ddp_grads):
    """examples/digits.py's training loop under DDP (as with torchrun): the two processes, each
    on its half of every batch, end the epoch with identical weights, which have moved."""
    (before0, after0), (before1, after1) = ddp_grads[0]["digits"], ddp_grads[1]["digits"]
    assert torch.equal(before0, before1) and torch.equal(after0, after1)
    assert float((after0 - before0).abs().max()) > 1e-4
