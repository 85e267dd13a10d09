import pytest
import torch

# Two cores are shared by everything on this machine: one thread keeps timings stable.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
