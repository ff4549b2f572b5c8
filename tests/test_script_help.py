"""Every script answers --help (exit 0), and does so without importing torch (issue 19: start-up).

Each script runs in a fresh interpreter, as ``__main__`` through runpy, with ``--help``; a wrapper
catches the SystemExit of argparse and then reports which heavy modules are in ``sys.modules``.
Speed is not asserted here (it depends on the machine): ``scripts/help_times.py`` measures it.
"""
import functools
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py") if p.name != "__init__.py")

# Modules whose import costs seconds; none of them may be loaded just to print --help.
HEAVY = ("torch", "compressai", "torchvision", "lpips", "pandas", "matplotlib")

# Scripts whose imports are not checked here, and why (they still have to exit 0 on --help).
NOT_CHECKED: dict = {}

WRAPPER = """
import json, runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
code = 0
try:
    runpy.run_path(path, run_name="__main__")
except SystemExit as exit_:
    code = exit_.code
print("HEAVY_MODULES=" + json.dumps([m for m in {heavy!r} if m in sys.modules]))
sys.exit(code or 0)
"""


@functools.lru_cache(maxsize=None)  # one run per script, shared by the two tests below
def run_help(script: str):
    """(exit status, stdout, stderr, heavy modules imported) of ``scripts/<script> --help``."""
    proc = subprocess.run([sys.executable, "-c", WRAPPER.format(heavy=HEAVY), f"scripts/{script}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    marker = [line for line in proc.stdout.splitlines() if line.startswith("HEAVY_MODULES=")]
    heavy = json.loads(marker[-1].split("=", 1)[1]) if marker else None
    return proc.returncode, proc.stdout, proc.stderr, heavy


def test_every_script_is_listed():
    assert len(SCRIPTS) >= 18 and "help_times.py" in SCRIPTS
    assert set(NOT_CHECKED) <= set(SCRIPTS), "a script named in NOT_CHECKED is gone: update the list"


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_exits_0(script):
    rc, out, err, heavy = run_help(script)
    assert rc == 0, f"{script} --help exited {rc}:\n{err[-2000:]}"
    assert "usage:" in out, f"{script} --help printed no usage:\n{out[-2000:]}"
    assert heavy is not None, f"{script}: the wrapper's report is missing:\n{err[-2000:]}"


@pytest.mark.parametrize("script", [
    pytest.param(s, marks=pytest.mark.skip(reason=f"not checked: {NOT_CHECKED[s]}")) if s in NOT_CHECKED else s
    for s in SCRIPTS])
def test_help_imports_no_torch(script):
    rc, _, err, heavy = run_help(script)
    assert rc == 0 and heavy is not None, f"{script} --help failed (exit {rc}):\n{err[-2000:]}"
    assert "torch" not in heavy, f"{script} --help imported torch: import it in main() after parse_args"
    assert heavy == [], f"{script} --help imported {heavy}: import them in main() after parse_args"


def test_calc_metrics_help_names_the_metrics_it_accepts():
    """calc_metrics.py spells out src.metrics.evaluate.ALL_METRICS (importing it means torch)."""
    from scripts import calc_metrics
    from src.metrics.evaluate import ALL_METRICS

    assert tuple(calc_metrics.METRIC_NAMES) == tuple(ALL_METRICS)


def test_bd_rate_runs_without_torch(tmp_path):
    """bd_rate.py needs numpy, pandas and bjontegaard only: not even a run imports torch."""
    rows = "bpp,psnr,lpips\n0.1,25,0.2\n0.2,27,0.15\n0.4,30,0.1\n0.8,33,0.05\n"
    (tmp_path / "a.csv").write_text(rows)
    (tmp_path / "b.csv").write_text(rows.replace("0.1,", "0.05,", 1))
    code = ("import runpy, sys\n"
            f"sys.argv = ['bd_rate.py', '--anchor', {str(tmp_path / 'a.csv')!r}, '--test', {str(tmp_path / 'b.csv')!r}]\n"
            "try:\n    runpy.run_path('scripts/bd_rate.py', run_name='__main__')\n"
            "except SystemExit as e:\n    assert not e.code, e.code\n"
            "print('torch imported:', 'torch' in sys.modules)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "psnr     BD-rate" in proc.stdout and "lpips    BD-rate" in proc.stdout
    assert "torch imported: False" in proc.stdout


def test_help_times_marks_scripts_over_the_bar(capsys):
    """The exit status follows the bar (times themselves are not checked)."""
    from scripts import help_times

    assert help_times.main(["bd_rate.py", "--bar", "1e9"]) == 0
    assert "OVER" not in capsys.readouterr().out
    assert help_times.main(["bd_rate", "--bar", "0"]) == 1
    assert "OVER" in capsys.readouterr().out


def test_script_limit_defaults_are_the_library_ones():
    """compress.py and decompress.py state their limit defaults without importing the library:
    keep them equal to it."""
    import runpy

    from src.compression import DEFAULT_MAX_PIXELS
    from src.models.codec.image_coder import MAX_DECODE_SIDE

    assert runpy.run_path(str(ROOT / "scripts" / "decompress.py"))["DEFAULT_MAX_SIDE"] == MAX_DECODE_SIDE
    compress = runpy.run_path(str(ROOT / "scripts" / "compress.py"))
    assert compress["DEFAULT_MAX_SIDE"] == MAX_DECODE_SIDE
    assert compress["DEFAULT_MAX_MEGAPIXELS"] * 1e6 == DEFAULT_MAX_PIXELS
