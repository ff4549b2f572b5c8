"""Benchmarks (never timed tests): codec speed, coding overhead, exact entropy parameters, memory,
training throughput, FLOPs.

    python scripts/benchmark.py [--sections codec,overhead,entropy,memory,training,flops] [--width full|toy]
                                [--out docs/benchmarks] [-d cpu]

Writes ``<out>.json`` and ``<out>.md``; every figure comes with the machine, torch version and
thread count. Without released weights the models are randomly initialised: speed and memory do
not depend on the weights, but the real/estimated bit ratio does, so ``overhead`` uses the toy
model trained by the quickstart when it exists (``--overhead_model``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# torch is imported by the functions that use it, so that --help does not wait for it.
ROOT = Path(__file__).resolve().parents[1]
FULL_CONFIG = ROOT / "config" / "dc_vic_patchgan.yaml"
TOY_CONFIG = ROOT / "config" / "quickstart" / "stage3.yaml"


def machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version()}


def photo(height: int = 512, width: int = 768) -> torch.Tensor:
    """A real photo (scikit-image's astronaut/coffee tiled and cropped) as (1, 3, H, W) in [-1, 1]."""
    import torch
    from skimage import data

    img = torch.from_numpy(data.coffee().copy()).permute(2, 0, 1).float() / 127.5 - 1
    reps = (1, -(-height // img.shape[1]), -(-width // img.shape[2]))
    return img.repeat(*reps)[:, :height, :width].unsqueeze(0).contiguous()


def _timed(fn, repeat: int = 1):
    best = float("inf")
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def load_dcvic(width: str, device: str):
    import torch

    from src.models.codec.loading import load_codec

    config = FULL_CONFIG if width == "full" else TOY_CONFIG
    torch.manual_seed(0)
    model, _ = load_codec(config, None, device, ["subnet.vq_model.ckpt_path=null"])
    return model


def bench_codec(args) -> dict:
    """Seconds to compress / decompress a 768x512 photo: DC-VIC and compressai baselines, same run."""
    import torch
    from compressai.models import Elic2022Official, MeanScaleHyperprior

    from src.models.codec.image_coder import ImageCoder

    x = photo()
    coder = ImageCoder(load_dcvic(args.width, args.device), device=args.device)
    t_enc, enc = _timed(lambda: coder.encode(x, 1.0, 2.0), args.repeat)
    t_dec, _ = _timed(lambda: coder.decode(enc.data), args.repeat)
    res = {"dcvic": {"compress_s": t_enc, "decompress_s": t_dec, "bytes": len(enc.data)}}
    for name, build in (("Elic2022Official", lambda: Elic2022Official(N=192, M=320)),
                        ("MeanScaleHyperprior", lambda: MeanScaleHyperprior(N=128, M=192))):
        net = build().eval()
        net.update(force=True)
        xi = (x + 1) / 2
        with torch.inference_mode():
            te, out = _timed(lambda: net.compress(xi), args.repeat)
            td, _ = _timed(lambda: net.decompress(out["strings"], out["shape"]), args.repeat)
        res[name] = {"compress_s": te, "decompress_s": td,
                     "dcvic_compress_ratio": t_enc / te, "dcvic_decompress_ratio": t_dec / td}
    return res


def bench_overhead(args) -> dict:
    """Real bits of the rANS streams / the model's estimate (header excluded) on a real photo."""
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    path = Path(args.overhead_model) if args.overhead_model else None
    if path is None or not path.is_file():
        return {"skipped": "no trained model: run scripts/quickstart.py first or pass --overhead_model"}
    model, _ = load_codec(TOY_CONFIG, path, "cpu", ["subnet.vq_model.ckpt_path=null"])
    coder = ImageCoder(model)
    rows = {}
    for beta_rate in (0.0, 1.5, 3.0):
        x = photo(512, 512)
        enc = coder.encode(x, beta_rate, 1.75, estimate=True)   # the estimate from the coding pass
        pred = enc.predicted
        rows[f"beta_rate_{beta_rate}"] = {"real_bits": enc.z_bit + enc.y_bit, "estimated_bits": pred["pred_bit"],
                                          "ratio": (enc.z_bit + enc.y_bit) / pred["pred_bit"],
                                          "header_bits": enc.header_bit}
    return {"model": str(path), **rows}


def bench_entropy(args) -> dict:
    """The exact entropy parameters against float32 ones, on the same latents and tables.

    For each image: y and z from the encoder, then the coding pass twice, with h_s / ChARM in exact
    integer arithmetic (what the coder uses) and in float32 (the path before it): the code length
    of the symbols under the coder's tables and the seconds of each, and the real stream (one
    rANS string and the frame). Toy width uses ``--overhead_model`` when it exists."""
    import torch

    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec
    from src.models.codec.symbols import table_bits

    path = Path(args.overhead_model) if args.width == "toy" and args.overhead_model else None
    if path is not None and path.is_file():
        model, _ = load_codec(TOY_CONFIG, path, "cpu", ["subnet.vq_model.ckpt_path=null"])
    else:
        path, model = None, load_dcvic(args.width, "cpu")
    coder = ImageCoder(model)
    cm, ey = model.context_model, model.entropy_model_y
    size = 512 if args.width == "toy" else 256
    totals = {"exact_bits": 0.0, "float32_bits": 0.0, "exact_s": 0.0, "float32_s": 0.0, "stream_bits": 0,
              "header_bits": 0, "ideal_bits": 0.0}
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        x = photo_named(name, size)
        for beta_rate, beta_vq in ((0.0, 1.0), (1.5, 2.0), (3.0, 3.5)):
            br, bv = torch.tensor([beta_rate]), torch.tensor([beta_vq])
            with torch.inference_mode():
                y = model.encode(x, br, bv)["y"].float()
                enc = model.compress(x, br, bv)
                z_hat = model.entropy_model_z.quantize(model.hyperencoder(y), "dequantize",
                                                       model.entropy_model_z._get_medians())
                slices = y.double().chunk(cm.num_slices, 1)
                for exact in (True, False):
                    bits, t = 0.0, time.perf_counter()
                    hyper = model.hyperdecoder.exact(z_hat) if exact else model.hyperdecoder(z_hat)
                    decoded = []
                    for i in range(cm.num_slices):
                        y_i = slices[i] if exact else slices[i].float()
                        support, mu, sigma = cm._params(i, hyper, decoded, exact=exact)
                        idx = ey.build_indexes(sigma)
                        sym = torch.round(y_i - mu)
                        bits += table_bits(ey, sym.int(), idx)
                        decoded.append(cm._lrp(i, support, sym + mu, exact=exact))
                    key = "exact" if exact else "float32"
                    totals[f"{key}_s"] += time.perf_counter() - t
                    totals[f"{key}_bits"] += bits
            coded = coder.encode(x, beta_rate, beta_vq)
            totals["stream_bits"] += 8 * len(coded.data)
            totals["header_bits"] += coded.header_bit
            totals["ideal_bits"] += sum(enc["ideal_bits"][0].values())
    return {"model": str(path) if path else f"{args.width} width, random weights", "images": f"4 photos x 3 beta pairs, {size} px",
            **totals, "exact_over_float32_y_bits": totals["exact_bits"] / totals["float32_bits"],
            "exact_over_float32_seconds": totals["exact_s"] / totals["float32_s"],
            "stream_over_ideal_bits": (totals["stream_bits"] - totals["header_bits"]) / totals["ideal_bits"]}


def photo_named(name: str, size: int):
    """The centre ``size`` x ``size`` crop of a bundled photo (scaled up when it is smaller), (1, 3, H, W) in [-1, 1]."""
    import torch
    import torch.nn.functional as F
    from skimage import data

    img = torch.from_numpy(getattr(data, name)().copy()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1
    if min(img.shape[-2:]) < size:
        img = F.interpolate(img, scale_factor=size / min(img.shape[-2:]), mode="bilinear", align_corners=False)
    top, left = (img.shape[-2] - size) // 2, (img.shape[-1] - size) // 2
    return img[..., top:top + size, left:left + size].contiguous()


MEMORY_CHILD = r"""
import sys, time, torch
sys.path.insert(0, {root!r})
sys.argv = ["x"]
from scripts.benchmark import load_dcvic, photo
from src.models.codec.image_coder import ImageCoder

def status(key):  # MB; VmHWM is the peak since the last reset
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) / 1024

def reset_peak():  # Linux: clear_refs 5 resets VmHWM (maxrss is inherited across fork/exec)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")

coder = ImageCoder(load_dcvic({width!r}, "cpu"))
x = photo({img_h}, {img_w})
base = status("VmRSS")
reset_peak()
t = time.perf_counter(); enc = coder.encode(x, 1.0, 2.0); te = time.perf_counter() - t
peak_c = status("VmHWM")
reset_peak()
t = time.perf_counter(); coder.decode(enc.data); td = time.perf_counter() - t
peak_d = status("VmHWM")
print(base, peak_c, peak_d, te, td)
"""


def bench_memory(args) -> dict:
    """Peak resident memory (fresh process each, Linux VmHWM) of compress, then decompress, per size.

    ``*_extra_MB`` is the peak above the memory held once the model and the image are loaded."""
    res = {}
    for size in args.memory_sizes:
        w, _, h = size.partition("x")
        name = f"{w}x{h or w}"
        code = MEMORY_CHILD.format(root=str(ROOT), width=args.width, img_h=int(h or w), img_w=int(w))
        try:
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=args.timeout)
        except subprocess.TimeoutExpired:
            res[name] = {"error": f"not finished within --timeout {args.timeout} s"}
            continue
        if out.returncode != 0:
            res[name] = {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
            continue
        base, peak_c, peak_d, te, td = map(float, out.stdout.split()[-5:])
        res[name] = {"model_loaded_MB": base, "compress_peak_MB": peak_c,
                                 "compress_extra_MB": peak_c - base, "decompress_peak_MB": peak_d,
                                 "decompress_extra_MB": peak_d - base, "compress_s": te, "decompress_s": td}
    return res


def bench_training(args) -> dict:
    """it/s and data-loading share of DC-VIC step 1-2 and of VQGAN training (GAN on), batch 2, 256x256
    crops. LPIPS is off: its pretrained backbone cannot be assumed present (it adds one AlexNet/VGG pass)."""
    from src.trainer import build_trainer
    from src.utils.config import load_config

    res = {}
    runs = {"dcvic_step1_2": ("config/quickstart/stage1_2.yaml" if args.width == "toy" else "config/exp1_stage1_2.yaml",
                              ["subnet.vq_model.ckpt_path=null", "load_checkpoint=null", "loss.perceptual_loss=null"]),
            "vqgan_f8": ("config/tokenizer/quickstart/quickstart_vqgan_prior.yaml" if args.width == "toy"
                         else "config/tokenizer/vqgan/vqgan_f8_n256.yaml",
                         ["trainer.disc_start=0", "loss.perceptual_loss=null"])}
    for name, (config, opts) in runs.items():
        sample = ROOT / "datasets" / "sample_photos"
        common = [f"ckpt_dir={ROOT / 'results' / 'benchmark_ckpt'}", "eval_step=null", "log_step=1000",
                  "save_step=100000", f"total_iter={args.train_iters}", "dataset.batch_size=2",
                  "dataset.num_workers=0"]
        data = ["dataset.train_dataset={type: ImageDataset, root_dir: '%s', sample_photos: true, image_size: 256}"
                % sample]
        cfg = load_config(ROOT / config, opts + common + data)
        trainer = build_trainer(cfg, exp_name=f"bench_{name}", device=args.device, auto_resume=False)
        times, loads = [], []
        it = iter(trainer.train_loader)
        for i in range(args.train_iters):
            t0 = time.perf_counter()
            batch = trainer._to_device(next(it))
            t1 = time.perf_counter()
            trainer.model.train()
            trainer.train_step(batch, i)
            t2 = time.perf_counter()
            if i > 0:  # the first step pays for allocation
                times.append(t2 - t0)
                loads.append(t1 - t0)
        res[name] = {"it_per_s": len(times) / sum(times), "data_share": sum(loads) / sum(times),
                     "iters_timed": len(times)}
    return res


def bench_flops(args) -> dict:
    """FLOPs of encode (g_a path) and decode (reconstruction path) for 768x512; measured fp32 peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    model = load_dcvic(args.width, args.device)
    x = photo().to(args.device)
    br, bv = torch.tensor([1.0]), torch.tensor([2.0])
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            y = model.encode(x, br, bv)["y"]
        enc_flops = fc.get_total_flops()
        y_hat = torch.round(y)
        t_dec, _ = _timed(lambda: model.decode(y_hat, br, bv), 1)
        with FlopCounterMode(display=False) as fc:
            model.decode(y_hat, br, bv)
        dec_flops = fc.get_total_flops()
        t_enc, _ = _timed(lambda: model.encode(x, br, bv), 1)
    peak = measured_peak()
    return {"encode_GFLOP": enc_flops / 1e9, "decode_GFLOP": dec_flops / 1e9, "encode_s": t_enc, "decode_s": t_dec,
            "encode_GFLOPs": enc_flops / 1e9 / t_enc, "decode_GFLOPs": dec_flops / 1e9 / t_dec, **peak,
            "encode_share_of_conv_peak": enc_flops / 1e9 / t_enc / peak["conv3x3_GFLOPs"],
            "decode_share_of_conv_peak": dec_flops / 1e9 / t_dec / peak["conv3x3_GFLOPs"]}


def measured_peak() -> dict:
    import torch

    a, b = torch.randn(2048, 2048), torch.randn(2048, 2048)
    t, _ = _timed(lambda: a @ b, 3)
    conv = torch.nn.Conv2d(192, 192, 3, padding=1).eval()
    z = torch.randn(1, 192, 128, 128)
    with torch.inference_mode():
        tc, _ = _timed(lambda: conv(z), 3)
    conv_flops = 2 * 192 * 192 * 9 * 128 * 128
    return {"matmul_GFLOPs": 2 * 2048 ** 3 / t / 1e9, "conv3x3_GFLOPs": conv_flops / tc / 1e9}


SECTIONS = {"codec": bench_codec, "overhead": bench_overhead, "entropy": bench_entropy, "memory": bench_memory,
            "training": bench_training, "flops": bench_flops}


def to_markdown(result: dict) -> str:
    lines = ["# Benchmarks", "", "Measured by `scripts/benchmark.py`; regenerate with the command in its docstring.", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in result["machine"].items()), "",
             f"Model width: {result['width']} (random weights unless stated).", ""]
    for section, data in result["sections"].items():
        lines += [f"## {section}", "", "| item | value |", "|---|---|"]
        for key, value in _flatten(data):
            lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
        lines.append("")
    return "\n".join(lines)


def _flatten(data, prefix=""):
    for k, v in data.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k} / ")
        else:
            yield f"{prefix}{k}", v


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default="codec,overhead,memory,training,flops")
    p.add_argument("--width", choices=["full", "toy"], default="full")
    p.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--train_iters", type=int, default=3)
    p.add_argument("--memory_sizes", nargs="+", default=["512", "768x512", "1024", "2048"],
                   help="image sizes of the memory section: N (square) or WxH")
    p.add_argument("--overhead_model", default=str(ROOT / "results" / "quickstart" / "checkpoint" / "stage3" /
                                                  "model" / "comp_model_iter60.pth.tar"))
    p.add_argument("--timeout", type=int, default=1800)
    args = p.parse_args(argv)
    result = {"machine": machine(), "width": args.width, "sections": {}}
    for name in args.sections.split(","):
        if name not in SECTIONS:
            raise SystemExit(f"unknown section {name!r}; known: {', '.join(SECTIONS)}")
        t = time.perf_counter()
        try:
            result["sections"][name] = SECTIONS[name](args)
        except Exception as e:  # one failing section must not lose the others
            result["sections"][name] = {"error": f"{type(e).__name__}: {e}"}
        print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=2, default=str))
    out.with_suffix(".md").write_text(to_markdown(result))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
