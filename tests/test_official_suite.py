"""The official momentumnet 0.10 test-suite and examples, run against ``secondorder.compat``.

The sdist is downloaded from the package registry at test time (nothing of it is kept in this
repository) and skipped cleanly when the registry cannot be reached. A stand-in package named
``momentumnet`` exports ``MomentumNet`` and ``transform_to_momentumnet`` from
``secondorder.compat``; the sdist's own helper modules (``momentumnet.toy_datasets``, the examples'
data generator) stay importable from the download. Each file runs in a fresh interpreter with one
thread (two shared cores).
"""

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
VERSION = "0.10"
SHIM = """import os
from secondorder.compat import MomentumNet, transform_to_momentumnet  # noqa: F401

# the sdist's other modules (toy_datasets, ...) stay importable as momentumnet.<name>
__path__.append(os.environ["OFFICIAL_MOMENTUMNET"])
"""


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    where = tmp_path_factory.mktemp("official")
    try:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
             f"momentumnet=={VERSION}", "-d", str(where), "-q", "--disable-pip-version-check"],
            check=True, capture_output=True, timeout=180,
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"the momentumnet {VERSION} sdist could not be downloaded (registry unreachable?): {e}")
    (archive,) = where.glob("momentumnet-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(where, filter="data")
    src = where / f"momentumnet-{VERSION}"
    shim = where / "shim" / "momentumnet"
    shim.mkdir(parents=True)
    (shim / "__init__.py").write_text(SHIM)
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(shim.parent), str(ROOT)]),
        OFFICIAL_MOMENTUMNET=str(src / "momentumnet"),
        MPLBACKEND="Agg",
        OMP_NUM_THREADS="1",
        PYTHONDONTWRITEBYTECODE="1",
    )
    return src, env


def _run(cmd, cwd, env, timeout=900):
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_official_test_suite_passes_against_compat(official):
    pytest.importorskip("torchvision")  # test_transform.py imports it
    src, env = official
    tests = src / "momentumnet" / "tests"
    # test_exact_repr.py tests the official package's float exact-representation helper, which is
    # not part of the drop-in API (MomentumNet, transform_to_momentumnet)
    files = [str(tests / "test_momentum_net.py"), str(tests / "test_transform.py")]
    # run from a scratch folder so that this repository's pytest settings are not picked up
    rc, out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "ignore", *files],
                   src.parent, env)
    assert rc == 0, out[-4000:]
    assert "13 passed" in out, out[-2000:]
    # the stand-in really was the one imported
    rc, out = _run([sys.executable, "-c", "import momentumnet; print(momentumnet.MomentumNet.__module__)"],
                   src.parent, env)
    assert out.strip() == "secondorder.compat", out


EXAMPLES = [
    ("drop_in_replacement.py", ["torchvision"]),
    ("drop_in_replacement_tutorial.py", []),
    ("drop_in_replacement_advanced.py", ["vit_pytorch"]),
    ("plot_dynamics_1D.py", []),
    ("plot_separation_nested_rings.py", []),
    ("plot_memory.py", ["memory_profiler"]),
]


@pytest.mark.parametrize("script,needs", EXAMPLES, ids=[e[0] for e in EXAMPLES])
def test_official_example_runs_against_compat(official, script, needs, tmp_path):
    for module in needs:
        pytest.importorskip(module)
    src, env = official
    rc, out = _run([sys.executable, str(src / "examples" / script)], tmp_path, env)
    assert rc == 0, out[-4000:]
    if script == "drop_in_replacement.py":
        # gamma = 0 reproduces the ResNet: the script prints the squared difference of the outputs
        assert "tensor(0.," in out, out[-2000:]
        assert "gamma=0, use_backprop=False" in out  # the warning that no memory is saved
