"""BD-rate (and BD-quality) of test RD curves against an anchor curve, per metric.

    python scripts/bd_rate.py --anchor data/rd_results/kodak.csv:dc_vic_patchgan --test ours.csv

``--anchor``/``--test`` are ``PATH[:MODEL]`` (MODEL picks a ``model`` value of the CSV).
Negative BD-rate = fewer bits for the same quality; directions of LPIPS/DISTS/FID are handled.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make `src` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def metrics_module(name: str):
    """``src.metrics.<name>`` (``bd`` or ``rd``: numpy, pandas, bjontegaard) without torch.

    ``import src.metrics.bd`` would first run src/metrics/__init__.py, which imports the FID and
    LPIPS wrappers and with them torch. Unless the package is already imported, the module file is
    loaded on its own, under its usual name (so ``rd``'s ``from src.metrics.bd import ...`` finds it).
    """
    import importlib
    import importlib.util

    full = f"src.metrics.{name}"
    if full in sys.modules or "src.metrics" in sys.modules:
        return importlib.import_module(full)
    import src  # an empty package: light

    path = Path(next(iter(src.__path__))) / "metrics" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(full, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[full] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[full]
        raise
    return module


def pick_curve(spec: str):
    """``path.csv[:model]`` -> (label, DataFrame)."""
    load_rd_csv = metrics_module("rd").load_rd_csv
    path, sep, model = spec.rpartition(":")
    if not (sep and path.lower().endswith(".csv")):
        path, model = spec, ""
    curves = load_rd_csv(path)
    if model:
        curves = [c for c in curves if c[0] == model]
        if not curves:
            names = [c[0] for c in load_rd_csv(path)]
            raise SystemExit(f"no model '{model}' in {path}; available: {names}")
    if len(curves) != 1:
        raise SystemExit(f"{path} holds several models {[c[0] for c in curves]}: add ':MODEL'")
    return curves[0]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--anchor", required=True)
    p.add_argument("--test", required=True, action="append")
    p.add_argument("--method", default="pchip", choices=("pchip", "akima", "cubic"))
    args = p.parse_args(argv)
    bd, rd = metrics_module("bd"), metrics_module("rd")
    bd_quality, bd_rate, higher_is_better = bd.bd_quality, bd.bd_rate, bd.higher_is_better
    a_name, anchor = pick_curve(args.anchor)
    for spec in args.test:
        t_name, test = pick_curve(spec)
        print(f"{t_name} vs {a_name}:")
        for m in rd.PLOT_METRICS:
            if m in anchor and m in test:
                hb = higher_is_better(m)
                a, t = anchor[["bpp", m]].dropna(), test[["bpp", m]].dropna()  # points without this metric
                rate = bd_rate(a.bpp, a[m], t.bpp, t[m], hb, args.method)
                qual = bd_quality(a.bpp, a[m], t.bpp, t[m], hb, args.method)
                print(f"  {m:8s} BD-rate {rate:+8.2f} %   BD-{m} {qual:+.4f} (positive = better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
