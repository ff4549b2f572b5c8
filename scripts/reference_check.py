"""Side-by-side check of this codebase against the DC-VIC reference implementation (iwa-shi/DC_VIC).

The reference is never vendored: give a checkout of it (``git clone https://github.com/iwa-shi/DC_VIC``)
with ``--reference_dir`` or the environment variable ``DCVIC_REFERENCE_DIR``, in an environment where
its own imports work (its ``src`` package, ``ldm`` and ``taming`` of latent-diffusion, CompressAI).
Without it the script says so and exits with status 2 (the test of this harness is skipped).

What it does, for each variant (PatchGAN, OASIS):

1. In a child process that imports only the reference's code: builds the reference model from the
   reference's own config (``config/dc_vic_<variant>.yaml``, the VQGAN randomly initialised) under
   ``torch.manual_seed(--seed)``, saves ``{"comp_model": state_dict}`` as the reference's trainer does,
   runs its forward pass (``run_model(..., is_train=False)``) on crops of real photos (scikit-image's
   bundled ones) at each ``--pairs`` (beta_rate, beta_vq), recording the outputs of every top-level
   submodule, and compresses / decompresses each crop (``codec_setup``, ``compress``, ``decompress``).
2. Here: loads that file through our loader (``load_codec``, strict), runs the same inputs and
   reports the maximum absolute difference of each output (x_hat, y, y_hat, z_hat, likelihoods, bpp,
   VQ logits) and of each submodule's outputs, and compares the decoded images of real streams.

``--time`` adds the timing of one 768x512 photo (encode and decode, median of ``--repeats``) with
the same weights and thread count, each implementation in its own process, with its peak RSS.

Results go to ``<out>/reference_check.json`` and ``<out>/reference_check.md``. Tolerances: forward
outputs at most ``--atol`` (default 1e-4: float32 noise through the same operations); decoded
images of the coded path are compared as PSNR between the two decodes (at least ``--min_coded_psnr``,
default 40 dB), because our entropy path computes h_s/ChARM in exact integer arithmetic and one
flipped VQ code changes a whole 8x8 block.

    python scripts/reference_check.py --reference_dir ../DC_VIC --out results/reference_check
    python scripts/reference_check.py --reference_dir ../DC_VIC --time --threads 4
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
ENV_VAR = "DCVIC_REFERENCE_DIR"
REFERENCE_URL = "https://github.com/iwa-shi/DC_VIC"
#: files whose presence identifies a checkout of the reference
REFERENCE_MARKERS = ("src/models/comp_model/hyperprior_dc_vic_model.py", "config/dc_vic_patchgan.yaml",
                     "config/dc_vic_oasis.yaml")
VARIANTS = ("patchgan", "oasis")
DEFAULT_PAIRS = ((0.0, 0.0), (1.5, 1.75), (3.0, 3.5), (2.29, 3.0), (0.16, 1.0))
PHOTOS = ("astronaut", "coffee")
TIME_SIZE = (512, 768)  # H, W of the timed photo
#: named outputs compared on the forward pass: our key -> the reference's key in ``run_model``'s dict
FORWARD_KEYS = {"x_hat": "fake_images", "y": "latent_code.y", "y_hat": "quantized_code.y",
                "z_hat": "quantized_code.z", "likelihoods.y": "likelihoods.y", "likelihoods.z": "likelihoods.z",
                "vq_logits": "out_vq_logits", "vq_latent_hat": "out_vq_latent", "vq_latent": "gt_vq_latent"}


class ReferenceNotFound(RuntimeError):
    """No usable reference checkout; the message says how to get one."""


def how_to_get_reference() -> str:
    return (f"get the reference with `git clone {REFERENCE_URL}` (never copied into this repository), install its "
            f"dependencies (its README: poetry install; it needs latent-diffusion's `ldm` and `taming`), and pass "
            f"--reference_dir PATH or set {ENV_VAR}=PATH")


def find_reference_dir(arg: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> Path:
    """The reference checkout from ``arg`` or ``$DCVIC_REFERENCE_DIR``; ReferenceNotFound otherwise."""
    env = os.environ if env is None else env
    value = arg or env.get(ENV_VAR)
    if not value:
        raise ReferenceNotFound(f"no reference checkout given; {how_to_get_reference()}")
    path = Path(value).expanduser().resolve()
    missing = [m for m in REFERENCE_MARKERS if not (path / m).is_file()]
    if missing:
        raise ReferenceNotFound(f"{path} is not a checkout of {REFERENCE_URL} (missing {', '.join(missing)}); "
                                f"{how_to_get_reference()}")
    return path


def parse_pairs(values: Sequence[str]) -> List[Tuple[float, float]]:
    """``["0,0", "1.5,1.75"]`` -> [(0.0, 0.0), (1.5, 1.75)]."""
    pairs = []
    for v in values:
        parts = v.split(",")
        if len(parts) != 2:
            raise argparse.ArgumentTypeError(f"a pair is BETA_RATE,BETA_VQ, got {v!r}")
        br, bv = float(parts[0]), float(parts[1])
        if not (0 <= br <= 3.0 and 0 <= bv <= 3.5):
            raise argparse.ArgumentTypeError(f"betas must lie in [0, 3] x [0, 3.5], got {v!r}")
        pairs.append((br, bv))
    return pairs


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reference_dir", help=f"checkout of {REFERENCE_URL} (default: ${ENV_VAR})")
    p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    p.add_argument("--pairs", nargs="+", default=[f"{a},{b}" for a, b in DEFAULT_PAIRS],
                   help="BETA_RATE,BETA_VQ pairs (default: %(default)s)")
    p.add_argument("--size", type=int, default=256, help="side of the square photo crops (multiple of 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the reference model's initialisation")
    p.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1), help="torch threads, both sides")
    p.add_argument("--atol", type=float, default=1e-4, help="largest accepted forward difference")
    p.add_argument("--min_coded_psnr", type=float, default=40.0,
                   help="smallest accepted PSNR (dB) between the two decodes of the coded path")
    p.add_argument("--time", action="store_true", help="also time encode/decode of a 768x512 photo, with peak RSS")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (median)")
    p.add_argument("--out", default="results/reference_check", help="folder for reference_check.{json,md}")
    p.add_argument("--keep_work", action="store_true", help="keep the exchanged tensors under <out>/work")
    args = p.parse_args(argv)
    if args.size % 64 or args.size < 64:
        p.error("--size must be a positive multiple of 64")
    try:
        args.pairs = parse_pairs(args.pairs)
    except argparse.ArgumentTypeError as e:
        p.error(str(e))
    return args


# ---------------------------------------------------------------------------------------- comparison
def flatten_outputs(value: Any, prefix: str = "") -> Dict[str, Any]:
    """Tensors of a (nested) tuple/list/dict output, keyed by their path (``0``, ``1.y`` ...)."""
    import torch

    if isinstance(value, torch.Tensor):
        return {prefix or "out": value.detach().float().cpu()}
    items: Iterable = ()
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, (tuple, list)):
        items = enumerate(value)
    out: Dict[str, Any] = {}
    for k, v in items:
        out.update(flatten_outputs(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def tensor_diff(ref, ours) -> Dict[str, Any]:
    """Max and mean absolute difference of two tensors (or why they cannot be compared)."""
    import torch

    if ref is None or ours is None:
        return {"status": "missing", "in_reference": ref is not None, "in_ours": ours is not None}
    ref, ours = ref.detach().double().cpu(), ours.detach().double().cpu()
    if ref.shape != ours.shape:
        return {"status": "shape", "reference_shape": list(ref.shape), "ours_shape": list(ours.shape)}
    diff = (ref - ours).abs()
    finite = bool(torch.isfinite(ref).all() and torch.isfinite(ours).all())
    return {"status": "ok", "shape": list(ref.shape), "max_abs": float(diff.max()) if diff.numel() else 0.0,
            "mean_abs": float(diff.mean()) if diff.numel() else 0.0, "finite": finite}


def compare_calls(ref_calls: Mapping[str, List[Dict[str, Any]]],
                  our_calls: Mapping[str, List[Dict[str, Any]]]) -> Dict[str, Dict[str, Any]]:
    """Per submodule: the largest difference over all its recorded calls and output tensors.

    Each side maps a submodule name to the list of its calls, each call a dict of output tensors
    (:func:`flatten_outputs`). A submodule called a different number of times on the two sides, or
    recorded on one side only (the two implementations call some parts through methods other than
    ``forward``), is reported as not comparable.
    """
    report = {}
    for name in sorted(set(ref_calls) | set(our_calls)):
        r, o = ref_calls.get(name, []), our_calls.get(name, [])
        if not r or not o:
            report[name] = {"status": "missing", "reference_calls": len(r), "our_calls": len(o)}
            continue
        if len(r) != len(o):
            report[name] = {"status": "calls", "reference_calls": len(r), "our_calls": len(o)}
            continue
        worst = {"status": "ok", "calls": len(r), "max_abs": 0.0, "worst_output": None}
        for i, (rc, oc) in enumerate(zip(r, o)):
            if set(rc) != set(oc):
                worst = {"status": "outputs", "call": i, "reference_outputs": sorted(rc), "our_outputs": sorted(oc)}
                break
            for key in rc:
                d = tensor_diff(rc[key], oc[key])
                if d["status"] != "ok":
                    worst = {**d, "call": i, "output": key}
                    break
                if d["max_abs"] >= worst["max_abs"]:
                    worst.update(max_abs=d["max_abs"], worst_output=f"call {i} {key}")
            if worst["status"] != "ok":
                break
        report[name] = worst
    return report


class CallRecorder:
    """Records the outputs of every call of the named child modules (``with CallRecorder(model, names):``)."""

    def __init__(self, model, names: Optional[Sequence[str]] = None):
        children = dict(model.named_children())
        self.names = [n for n in (names or children) if n in children]
        self.modules = {n: children[n] for n in self.names}
        self.calls: Dict[str, List[Dict[str, Any]]] = {}
        self._handles: list = []

    def __enter__(self) -> "CallRecorder":
        for name, module in self.modules.items():
            def hook(_module, _inputs, output, _name=name):
                self.calls.setdefault(_name, []).append(flatten_outputs(output))
            self._handles.append(module.register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def bpp_of(likelihoods: Mapping[str, Any], num_pixels: int):
    """Estimated bits per pixel of each sample from a {"y", "z"} likelihood dict (same formula both sides)."""
    import math

    return sum((-lik.double().log().flatten(1).sum(1)) for lik in likelihoods.values()) / (math.log(2) * num_pixels)


def psnr_between(a, b) -> float:
    """PSNR (dB) between two images in [-1, 1]; inf when equal."""
    import math

    mse = float((((a.double() - b.double()) / 2) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def summarise_forward(ref: Mapping[str, Any], ours: Mapping[str, Any], num_pixels: int) -> Dict[str, Any]:
    """Differences of the named outputs (FORWARD_KEYS), the bpp, and the agreement of VQ codes."""
    from src.utils.config import get_path   # ours: this runs where our package is imported

    rows = {name: tensor_diff(get_path(ref, rkey), get_path(ours, name)) for name, rkey in FORWARD_KEYS.items()}
    ref_lik, our_lik = get_path(ref, "likelihoods"), get_path(ours, "likelihoods")
    if ref_lik is not None and our_lik is not None:
        rows["bpp"] = tensor_diff(bpp_of(ref_lik, num_pixels), bpp_of(our_lik, num_pixels))
    ref_logits, our_logits = get_path(ref, "out_vq_logits"), get_path(ours, "vq_logits")
    if ref_logits is not None and our_logits is not None and ref_logits.shape == our_logits.shape:
        rows["vq_indices_hat_agreement"] = float((ref_logits.argmax(1) == our_logits.argmax(1)).double().mean())
    ref_idx, our_idx = get_path(ref, "gt_vq_indices"), get_path(ours, "vq_indices")
    if ref_idx is not None and our_idx is not None and ref_idx.shape == our_idx.shape:
        rows["vq_indices_agreement"] = float((ref_idx == our_idx).double().mean())
    return rows


def verdict(results: Mapping[str, Any], atol: float, min_coded_psnr: float) -> List[str]:
    """Human-readable failures (empty when everything is within tolerance)."""
    failures = []
    for variant, res in results.get("variants", {}).items():
        if res.get("load") != "strict":
            failures.append(f"{variant}: the reference state dict did not load strictly: {res.get('load')}")
        for pair, rows in res.get("forward", {}).items():
            for name, d in rows.items():
                if isinstance(d, dict) and (d.get("status") != "ok" or d["max_abs"] > atol):
                    failures.append(f"{variant} {pair} {name}: {_short(d)}")
                elif isinstance(d, float) and d < 1.0:
                    failures.append(f"{variant} {pair} {name}: {d:.4f}")
        for pair, rows in res.get("submodules", {}).items():
            for name, d in rows.items():
                if d.get("status") == "ok" and d["max_abs"] > atol:
                    failures.append(f"{variant} {pair} submodule {name}: {_short(d)}")
        for pair, row in res.get("coded", {}).items():
            if row.get("psnr_ours_vs_reference", 0.0) < min_coded_psnr:
                failures.append(f"{variant} {pair} coded: PSNR ours vs reference "
                                f"{row.get('psnr_ours_vs_reference')} dB < {min_coded_psnr}")
    return failures


def _short(d: Mapping[str, Any]) -> str:
    if d.get("status") == "ok":
        return f"max |diff| {d['max_abs']:.3g}"
    return ", ".join(f"{k}={v}" for k, v in d.items())


def _fmt(d: Any) -> str:
    if isinstance(d, float):
        return f"{d:.4f}"
    if not isinstance(d, dict):
        return str(d)
    if d.get("status") == "ok":
        return f"{d['max_abs']:.3g}"
    return d.get("status", "?") + " (" + ", ".join(f"{k} {v}" for k, v in d.items() if k != "status") + ")"


def markdown_report(results: Mapping[str, Any]) -> str:
    """The results as markdown: one table of forward differences per variant, submodules, coded path, timing."""
    lines = ["# DC-VIC: ours vs the reference implementation", "",
             f"Reference: `{results.get('reference_dir')}` (commit {results.get('reference_commit') or 'unknown'}); "
             f"seed {results.get('seed')}, {results.get('threads')} threads, photos {results.get('photos')}, "
             f"crops {results.get('size')} px. Forward tolerance {results.get('atol')}, coded-path PSNR "
             f"at least {results.get('min_coded_psnr')} dB.", ""]
    for variant, res in results.get("variants", {}).items():
        lines += [f"## {variant}", "", f"Strict load of the reference's `comp_model` through our loader: "
                  f"**{res.get('load')}**.", ""]
        forward = res.get("forward", {})
        if forward:
            names = list(next(iter(forward.values())))
            lines += ["Max absolute difference of the forward outputs (codes: share of equal indices):", "",
                      "| (beta_rate, beta_vq) | " + " | ".join(names) + " |",
                      "|---|" + "---|" * len(names)]
            for pair, rows in forward.items():
                lines.append(f"| {pair} | " + " | ".join(_fmt(rows.get(n)) for n in names) + " |")
            lines.append("")
        subs = res.get("submodules", {})
        if subs:
            names = sorted({n for rows in subs.values() for n in rows})
            lines += ["Max absolute difference of each submodule's outputs (all calls):", "",
                      "| (beta_rate, beta_vq) | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for pair, rows in subs.items():
                lines.append(f"| {pair} | " + " | ".join(_fmt(rows.get(n)) for n in names) + " |")
            lines.append("")
        coded = res.get("coded", {})
        if coded:
            lines += ["Real compress/decompress (per crop: bits written, PSNR of each decode against the photo, "
                      "and between the two decodes):", "",
                      "| (beta_rate, beta_vq) | crop | ref bits | our bits | ref PSNR | our PSNR | ours vs ref PSNR "
                      "| y_hat max diff |", "|---|---|---|---|---|---|---|---|"]
            for key, row in coded.items():
                lines.append(f"| {row['pair']} | {row['crop']} | {row['reference_bits']} | {row['our_bits']} | "
                             f"{row['reference_psnr']:.2f} | {row['our_psnr']:.2f} | "
                             f"{row['psnr_ours_vs_reference']:.2f} | {_fmt(row.get('y_hat'))} |")
            lines.append("")
    timing = results.get("timing")
    if timing:
        lines += ["## Timing (768x512 photo, same weights and threads, one process each)", "",
                  "| | encode s | decode s | peak RSS MiB |", "|---|---|---|---|"]
        for side in ("reference", "ours"):
            t = timing.get(side, {})
            lines.append(f"| {side} | {t.get('encode_s', float('nan')):.3f} | {t.get('decode_s', float('nan')):.3f} | "
                         f"{t.get('peak_rss_mib', float('nan')):.0f} |")
        ratio = timing.get("ratio", {})
        lines += ["", f"Ratios ours / reference: encode {ratio.get('encode', float('nan')):.2f}x, "
                      f"decode {ratio.get('decode', float('nan')):.2f}x, peak RSS {ratio.get('rss', float('nan')):.2f}x.",
                  ""]
    failures = results.get("failures")
    if failures is not None:
        lines += ["## Verdict", ""] + ([f"- {f}" for f in failures] or ["All differences within tolerance."]) + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------- inputs
def photo_crops(size: int, names: Sequence[str] = PHOTOS):
    """(N, 3, size, size) centre crops of scikit-image's bundled photos, in [-1, 1]."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data as skdata

    crops = []
    for name in names:
        img = Image.fromarray(np.asarray(getattr(skdata, name)())).convert("RGB")
        w, h = img.size
        if min(w, h) < size:
            img = img.resize((max(size, round(w * size / min(w, h))), max(size, round(h * size / min(w, h)))),
                             Image.BICUBIC)
            w, h = img.size
        left, top = (w - size) // 2, (h - size) // 2
        arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.float32) / 127.5 - 1.0
        crops.append(torch.from_numpy(arr).permute(2, 0, 1))
    return torch.stack(crops)


def timing_photo():
    """(1, 3, 512, 768) in [-1, 1]: scikit-image's "coffee" photo (400x600) resized to 768x512."""
    import numpy as np
    import torch
    from PIL import Image
    from skimage import data as skdata

    h, w = TIME_SIZE
    img = Image.fromarray(np.asarray(skdata.coffee())).convert("RGB").resize((w, h), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(arr).permute(2, 0, 1)[None]


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _median(values: Sequence[float]) -> float:
    values = sorted(values)
    return values[len(values) // 2]


# ---------------------------------------------------------------------------------------- reference side
def _import_reference(reference_dir: Path):
    """Import the reference's ``src`` (and nothing of ours) in this process."""
    ours = str(ROOT)
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT and p != ours]
    sys.path.insert(0, str(reference_dir))
    for name in [m for m in sys.modules if m == "src" or m.startswith("src.")]:
        del sys.modules[name]
    import src  # noqa: F401  (the reference's package: registers its classes)
    from src.models import build_comp_model
    from src.utils.options import BaseConfig

    where = Path(src.__file__).resolve()
    if reference_dir not in where.parents:
        raise ReferenceNotFound(f"`import src` found {where}, not the reference under {reference_dir}")
    return build_comp_model, BaseConfig


def _reference_model(reference_dir: Path, variant: str, device: str = "cpu"):
    build_comp_model, BaseConfig = _import_reference(reference_dir)
    config = reference_dir / "config" / f"dc_vic_{variant}.yaml"
    cfg_dict, cfg_text, _ = BaseConfig._file2dict_yaml(str(config))
    cfg_dict["subnet"]["vq_model"]["ckpt_path"] = None  # random VQGAN: only the weights we save matter
    cfg_dict.update(device=device, is_train=False)
    opt = BaseConfig(cfg_dict, cfg_text=cfg_text, filename=str(config))
    return build_comp_model(opt).to(device)


def reference_worker(job: Mapping[str, Any]) -> None:
    """Child process: build, save, run forward and coding with the reference's code (``job`` from JSON)."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    reference_dir, work = Path(job["reference_dir"]), Path(job["work"])
    torch.manual_seed(int(job["seed"]))
    model = _reference_model(reference_dir, job["variant"])
    model.eval()
    torch.save({"comp_model": model.state_dict()}, work / "comp_model.pth.tar")  # as the reference's Saver
    inputs = torch.load(work / "inputs.pt")
    images, pairs = inputs["images"], [tuple(p) for p in inputs["pairs"]]
    n = images.shape[0]
    results: Dict[str, Any] = {"forward": {}, "calls": {}, "coded": {}}
    with torch.no_grad():
        for br, bv in pairs:
            with CallRecorder(model) as rec:
                out = model.run_model(real_images=images, is_train=False, beta_rate=torch.full((n,), br),
                                      beta_vq=torch.full((n,), bv))
            keep = {k: out.get(k) for k in ("fake_images", "out_vq_logits", "out_vq_latent", "gt_vq_latent",
                                             "gt_vq_indices", "latent_code", "quantized_code", "likelihoods")}
            results["forward"][f"{br},{bv}"] = keep
            results["calls"][f"{br},{bv}"] = rec.calls
        model.codec_setup()
        for br, bv in pairs:
            model.selected_beta_rate, model.selected_beta_vq = [br], [bv]
            for i in range(n):
                enc = model.compress(images[i:i + 1], quality_ind=0)
                bits = 8 * sum(len(s) for s in enc["string_list"])
                dec = model.decompress(enc["string_list"])
                x_hat = dec[0] if isinstance(dec, (tuple, list)) else dec
                y_hat = dec[2] if isinstance(dec, (tuple, list)) and len(dec) > 2 else None
                results["coded"][f"{br},{bv}/{i}"] = {"bits": bits, "x_hat": x_hat.detach().float().cpu(),
                                                      "y_hat": None if y_hat is None else y_hat.float().cpu()}
    torch.save(results, work / "reference_outputs.pt")


def reference_time_worker(job: Mapping[str, Any]) -> None:
    """Child process: time the reference's compress/decompress of the 768x512 photo."""
    import torch

    torch.set_num_threads(int(job["threads"]))
    torch.manual_seed(int(job["seed"]))
    model = _reference_model(Path(job["reference_dir"]), job["variant"])
    model.load_learned_weight(ckpt_path=str(Path(job["work"]) / "comp_model.pth.tar"))
    model.eval()
    model.codec_setup()
    model.selected_beta_rate, model.selected_beta_vq = [float(job["beta_rate"])], [float(job["beta_vq"])]
    x = timing_photo()
    enc_t, dec_t = [], []
    with torch.no_grad():
        for _ in range(int(job["repeats"]) + 1):  # the first run warms up
            t0 = time.perf_counter()
            enc = model.compress(x, quality_ind=0)
            t1 = time.perf_counter()
            model.decompress(enc["string_list"])
            t2 = time.perf_counter()
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
    print(json.dumps({"encode_s": _median(enc_t[1:]), "decode_s": _median(dec_t[1:]), "peak_rss_mib": peak_rss_mib(),
                      "bits": 8 * sum(len(s) for s in enc["string_list"])}))


# ---------------------------------------------------------------------------------------- our side
def our_model(variant: str, model_path: Optional[Path], threads: int, strict: bool = True,
              overrides: Sequence[str] = ()):
    """Our codec from config/dc_vic_<variant>.yaml, loading ``model_path`` through ``load_codec``."""
    import torch

    sys.path.insert(0, str(ROOT))
    from src.models.codec.loading import load_codec

    torch.set_num_threads(threads)
    model, _ = load_codec(ROOT / "config" / f"dc_vic_{variant}.yaml", model_path, device="cpu", strict=strict,
                          overrides=["subnet.vq_model.ckpt_path=null", *overrides])
    return model.eval()


def our_forward(model, images, pairs: Sequence[Tuple[float, float]]):
    """(named outputs, submodule calls) per pair, keyed ``"br,bv"`` as the reference side."""
    import torch

    forward, calls = {}, {}
    n = images.shape[0]
    with torch.no_grad():
        for br, bv in pairs:
            with CallRecorder(model) as rec:
                out = model(images, torch.full((n,), br), torch.full((n,), bv))
            forward[f"{br},{bv}"], calls[f"{br},{bv}"] = out, rec.calls
    return forward, calls


def our_coded(model, images, pairs: Sequence[Tuple[float, float]]):
    """Real streams through ImageCoder: {"br,bv/i": {bits, x_hat, y_hat}}."""
    from src.models.codec.image_coder import ImageCoder

    coder = ImageCoder(model)
    out = {}
    for br, bv in pairs:
        for i in range(images.shape[0]):
            enc = coder.encode(images[i:i + 1], br, bv)
            x_hat, _ = coder.decode(enc.data)
            y_hat = coder.decode_latent(enc.data)[1]
            out[f"{br},{bv}/{i}"] = {"bits": 8 * len(enc.data), "x_hat": x_hat.float(), "y_hat": y_hat.float()}
    return out


def compare_variant(ref: Mapping[str, Any], ours_forward, ours_calls, ours_coded, images) -> Dict[str, Any]:
    num_pixels = images.shape[2] * images.shape[3]
    res: Dict[str, Any] = {"forward": {}, "submodules": {}, "coded": {}}
    for pair, out in ours_forward.items():
        res["forward"][pair] = summarise_forward(ref["forward"][pair], out, num_pixels)
        res["submodules"][pair] = compare_calls(ref["calls"][pair], ours_calls[pair])
    for key, row in ours_coded.items():
        pair, crop = key.split("/")
        r = ref["coded"][key]
        x = images[int(crop):int(crop) + 1]
        res["coded"][key] = {"pair": pair, "crop": int(crop), "reference_bits": r["bits"], "our_bits": row["bits"],
                             "reference_psnr": psnr_between(r["x_hat"], x), "our_psnr": psnr_between(row["x_hat"], x),
                             "psnr_ours_vs_reference": psnr_between(row["x_hat"], r["x_hat"]),
                             "x_hat": tensor_diff(r["x_hat"], row["x_hat"]),
                             "y_hat": tensor_diff(r.get("y_hat"), row["y_hat"])}
    return res


def our_time_worker(job: Mapping[str, Any]) -> None:
    """Child process: time our ImageCoder encode/decode of the 768x512 photo with the reference's weights."""
    import torch

    model = our_model(job["variant"], Path(job["work"]) / "comp_model.pth.tar", int(job["threads"]))
    from src.models.codec.image_coder import ImageCoder  # ours: importable once our_model set the path

    coder = ImageCoder(model)
    x = timing_photo()
    enc_t, dec_t = [], []
    with torch.no_grad():
        for _ in range(int(job["repeats"]) + 1):
            t0 = time.perf_counter()
            enc = coder.encode(x, float(job["beta_rate"]), float(job["beta_vq"]))
            t1 = time.perf_counter()
            coder.decode(enc.data)
            t2 = time.perf_counter()
            enc_t.append(t1 - t0)
            dec_t.append(t2 - t1)
    print(json.dumps({"encode_s": _median(enc_t[1:]), "decode_s": _median(dec_t[1:]), "peak_rss_mib": peak_rss_mib(),
                      "bits": 8 * len(enc.data)}))


# ---------------------------------------------------------------------------------------- driver
def run_child(mode: str, job: Mapping[str, Any], cwd: Path) -> str:
    """Run this script in ``mode`` in a fresh interpreter; its stdout (the child's last line is JSON)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), f"--_child={mode}", json.dumps(dict(job))]
    proc = subprocess.run(cmd, cwd=str(cwd), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def reference_commit(reference_dir: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "-C", str(reference_dir), "rev-parse", "HEAD"], capture_output=True, text=True)
    except OSError:
        return None
    return out.stdout.strip() or None


def check(args: argparse.Namespace, reference_dir: Path) -> Dict[str, Any]:
    import shutil

    import torch

    out_dir = Path(args.out)
    results: Dict[str, Any] = {"reference_dir": str(reference_dir), "reference_commit": reference_commit(reference_dir),
                               "seed": args.seed, "threads": args.threads, "photos": list(PHOTOS), "size": args.size,
                               "pairs": args.pairs, "atol": args.atol, "min_coded_psnr": args.min_coded_psnr,
                               "variants": {}}
    images = photo_crops(args.size)
    for variant in args.variants:
        work = out_dir / "work" / variant
        work.mkdir(parents=True, exist_ok=True)
        torch.save({"images": images, "pairs": args.pairs}, work / "inputs.pt")
        job = {"reference_dir": str(reference_dir), "work": str(work.resolve()), "variant": variant,
               "seed": args.seed, "threads": args.threads}
        run_child("reference", job, reference_dir)
        ref = torch.load(work / "reference_outputs.pt", weights_only=False)
        try:
            model = our_model(variant, work / "comp_model.pth.tar", args.threads, strict=True)
            load = "strict"
        except Exception as e:  # noqa: BLE001 - reported, then the rest is compared on a lenient load
            load = f"failed: {e}"
            model = our_model(variant, work / "comp_model.pth.tar", args.threads, strict=False)
        fwd, calls = our_forward(model, images, args.pairs)
        res = compare_variant(ref, fwd, calls, our_coded(model, images, args.pairs), images)
        res["load"] = load
        results["variants"][variant] = res
        if args.time:
            tjob = {**job, "repeats": args.repeats, "beta_rate": args.pairs[0][0], "beta_vq": args.pairs[0][1]}
            timing = {"reference": json.loads(run_child("reference_time", tjob, reference_dir).strip().splitlines()[-1]),
                      "ours": json.loads(run_child("ours_time", tjob, ROOT).strip().splitlines()[-1])}
            timing["ratio"] = {k: timing["ours"][v] / timing["reference"][v]
                               for k, v in (("encode", "encode_s"), ("decode", "decode_s"), ("rss", "peak_rss_mib"))}
            timing["pair"] = list(args.pairs[0])
            results["timing"] = timing
            args.time = False  # timed once, with the first variant
        if not args.keep_work:
            shutil.rmtree(work, ignore_errors=True)
    results["failures"] = verdict(results, args.atol, args.min_coded_psnr)
    return results


def write_results(results: Mapping[str, Any], out_dir: Path) -> Tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    js, md = out_dir / "reference_check.json", out_dir / "reference_check.md"
    js.write_text(json.dumps(results, indent=1, default=str))
    md.write_text(markdown_report(results))
    return js, md


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0].startswith("--_child="):
        mode, job = argv[0].split("=", 1)[1], json.loads(argv[1])
        {"reference": reference_worker, "reference_time": reference_time_worker, "ours_time": our_time_worker}[mode](job)
        return 0
    args = parse_args(argv)
    try:
        reference_dir = find_reference_dir(args.reference_dir)
    except ReferenceNotFound as e:
        print(f"reference_check: {e}", file=sys.stderr)
        return 2
    results = check(args, reference_dir)
    js, md = write_results(results, Path(args.out))
    print(markdown_report(results))
    print(f"wrote {js} and {md}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
