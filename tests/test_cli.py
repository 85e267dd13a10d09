"""The `secondorder` command and the runners behind it."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from secondorder._cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_subcommands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("figures", "verify", "bench"):
        assert cmd in out


def test_bare_command_is_a_usage_error(capsys):
    assert main([]) == 2
    captured = capsys.readouterr()
    assert "usage: secondorder" in captured.err and captured.out == ""


def test_usage_errors_exit_2(capsys):
    assert main(["figures", "--no-such-option"]) == 2
    assert main(["bench"]) == 2
    assert "usage: secondorder bench" in capsys.readouterr().err
    assert main(["bench", "nope"]) == 2


def test_subcommand_help_names_itself():
    """`secondorder X --help` says `secondorder X` (not `python -m ...`) and lists its options."""
    for cmd, options in (("figures", ("--quick", "--seed", "--gallery", "--out")),
                         ("verify", ("--quick", "--seed", "--report")),
                         ("bench", ("memory", "speed", "adjoint", "solvers", "--quick", "--seed", "--out", "--device"))):
        out = subprocess.run([sys.executable, "-m", "secondorder", cmd, "--help"], capture_output=True, text=True, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        assert f"usage: secondorder {cmd}" in out.stdout
        assert "python -m" not in out.stdout.split("\n")[0]
        for opt in options:
            assert opt in out.stdout, (cmd, opt)


def test_outputs_go_under_out(tmp_path):
    """Default output places: out/figures, out/bench, out/theory (all under the gitignored out/)."""
    from benchmarks.__main__ import default_out
    from figures.__main__ import DEFAULT_OUT, GALLERY

    assert DEFAULT_OUT == ROOT / "out" / "figures" and GALLERY == ROOT / "figures"
    assert default_out("adjoint", ["--quick"]) == ROOT / "out" / "bench" / "adjoint_quick.json"
    assert default_out("memory", ["--device", "cuda"]) == ROOT / "out" / "bench" / "memory_cuda.json"
    # modes that measure something else do not overwrite the main table's JSON
    assert default_out("memory", ["--break-even"]) == ROOT / "out" / "bench" / "memory_break_even.json"
    assert default_out("speed", ["--kernels"]) == ROOT / "out" / "bench" / "speed_kernels.json"
    assert default_out("speed", ["--phases", "--quick"]) == ROOT / "out" / "bench" / "speed_quick_phases.json"
    assert default_out("speed", []) == ROOT / "out" / "bench" / "speed.json"
    ignored = subprocess.run(["git", "check-ignore", "-q", "out/figures/x.png"], cwd=ROOT)
    assert ignored.returncode == 0, "out/ must be gitignored"


def test_unknown_command(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


def test_bench_lists_benchmarks(capsys):
    assert main(["bench", "--help"]) == 0
    assert "memory" in capsys.readouterr().out


def test_unknown_names_are_rejected():
    with pytest.raises(SystemExit, match="unknown figure"):
        main(["figures", "no_such_figure", "--out", "/tmp/never"])
    with pytest.raises(SystemExit, match="unknown theory script"):
        main(["verify", "no_such_claim"])


def test_figures_manifest_is_merged_and_atomic(tmp_path, monkeypatch):
    """Render a tiny registered figure twice with different names; the manifest keeps both."""
    import figures
    from figures.__main__ import render

    mod = tmp_path / "tinyfig.py"
    mod.write_text(
        "from figures._style import new_figure\n"
        "def compute(quick, seed):\n    return {'v': seed + 1}\n"
        "def plot(data):\n    fig, ax = new_figure()\n    ax[0, 0].plot([0, 1], [0, data['v']])\n    return fig\n"
        "def numbers(data):\n    return {'v': data['v']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib

    monkeypatch.setitem(sys.modules, "figures.tinyfig", importlib.import_module("tinyfig"))
    monkeypatch.setitem(sys.modules, "figures.tinyfig2", importlib.import_module("tinyfig"))
    monkeypatch.setitem(figures.FIGURES, "tiny", "tinyfig")
    monkeypatch.setitem(figures.FIGURES, "tiny2", "tinyfig2")
    out = tmp_path / "out"
    render(["tiny"], quick=True, out=out, seed=3, progress=False)
    render(["tiny2"], quick=True, out=out, seed=4, progress=False)
    manifest = json.loads((out / "figures.json").read_text())
    assert manifest["tiny"]["numbers"] == {"v": 4} and manifest["tiny2"]["numbers"] == {"v": 5}
    assert manifest["tiny"]["path"] == "tiny.png"
    assert (out / "tiny.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tiny.pdf").exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*"))
    # same seed, same bytes
    first = (out / "tiny.png").read_bytes()
    render(["tiny"], quick=True, out=out, seed=3, progress=False)
    assert (out / "tiny.png").read_bytes() == first


def test_figures_output_is_clean_when_redirected(tmp_path):
    """Off a terminal: no progress-bar escape codes, one progress line per figure, and the
    numbers of each figure printed as complete JSON (not cut mid-key)."""
    out = subprocess.run([sys.executable, "-m", "secondorder", "figures", "phase_space", "--quick",
                          "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "\x1b[" not in out.stderr
    assert "[1/1] phase_space" in out.stderr
    numbers = json.loads(out.stdout.splitlines()[1])
    assert numbers["turning_points_of_x0_to_xN"] > 0 and numbers["first_order_flow_monotone"] is True
    # bars inside the figure scripts (training loops) are silenced too
    code = ("import sys; sys.path.insert(0, '.'); from figures.__main__ import _quiet_bars; _quiet_bars(); "
            "from tqdm.auto import tqdm; [None for _ in tqdm(range(3), desc='inner', leave=False)]")
    inner = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert inner.returncode == 0 and inner.stderr == "", inner.stderr
