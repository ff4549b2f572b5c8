"""GPU readiness check: the GPU side of training and coding in one command (JSON + markdown table).

    python scripts/gpu_check.py [--out results/gpu_check] [-d cuda|cpu] [--width full|toy]
                                [--steps N] [--loss_steps N] [--budget_s S] [--compile]

Full form (default on a CUDA device; about 8 minutes on one H100): the published widths with random
weights (no download: ``subnet.vq_model.ckpt_path=null``, LPIPS off), batch 8 of 256x256 crops of the
bundled photos.

* training it/s (warm-up steps excluded, the device synchronised around every step) and peak memory
  (``torch.cuda.max_memory_allocated``) of DC-VIC step 1-2 and step 1-3 in fp32 (TF32 off),
  bf16 autocast (``amp: true``), bf16 + ``channels_last``, and bf16 + channels_last under
  ``torch.compile`` (compile time reported separately); VQGAN f8 training (GAN on) in fp32 and
  bf16 + channels_last;
* step 1-2 trained ``--loss_steps`` (200) steps in fp32 and in bf16 + channels_last from the same
  weights on the same batches: both losses, and no NaN (goal: >= 1.5x the fp32 it/s at equal loss);
* compress / decompress of a 768x512 photo on the device;
* a stream encoded on the device decoded on the CPU and the other way round: the y_hat of both
  sides hashed (they must be bit-identical);
* a 1-process ``torchrun`` start of a training run (NCCL on CUDA, gloo on the CPU) that trains two
  steps under DistributedDataParallel and writes a checkpoint.

Toy form (default on the CPU; what the tests run, well under a minute): the same code paths at the
quickstart widths, 64 px crops, batch 2, a few steps; bf16 autocast runs on the CPU too;
``torch.compile`` only with ``--compile``.

``--budget_s`` bounds the run: what is left when it runs out is reported as skipped (the order puts
the most wanted figures first). Writes ``<out>/gpu_check.json`` and ``<out>/gpu_check.md``; data
and checkpoints go to a temporary folder.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# torch is imported by the functions that use it, so that --help does not wait for it.

#: per form: batch, crop size, timed/loss steps, photo (W, H) of the codec section, time budget
FORMS = {
    "full": {"batch": 8, "image_size": 256, "steps": 15, "warmup": 3, "loss_steps": 200, "photo": (768, 512),
             "budget_s": 450},
    "toy": {"batch": 2, "image_size": 64, "steps": 3, "warmup": 1, "loss_steps": 6, "photo": (256, 192),
            "budget_s": 600},
}
#: training runs, by name: config per form and the overrides that make them download-free
RUNS = {
    "dcvic_step1_2": ({"full": "config/exp1_stage1_2.yaml", "toy": "config/quickstart/stage1_2.yaml"},
                      ["subnet.vq_model.ckpt_path=null", "load_checkpoint=null", "loss.perceptual_loss=null"]),
    "dcvic_step1_3": ({"full": "config/exp1_stage1_3.yaml", "toy": "config/quickstart/stage1_3.yaml"},
                      ["subnet.vq_model.ckpt_path=null", "load_checkpoint=null", "loss.perceptual_loss=null"]),
    "vqgan_f8": ({"full": "config/tokenizer/vqgan/vqgan_f8_n256.yaml",
                  "toy": "config/tokenizer/quickstart/quickstart_vqgan_prior.yaml"},
                 ["trainer.disc_start=0", "trainer.ema_decay=null", "loss.perceptual_loss=null"]),
}
#: precision variants: config overrides, and whether the network is compiled
VARIANTS = {
    "fp32": (["amp=false", "channels_last=false"], False),
    "bf16": (["amp=true", "amp_dtype=bf16", "channels_last=false"], False),
    "bf16_cl": (["amp=true", "amp_dtype=bf16", "channels_last=true"], False),
    "bf16_cl_compile": (["amp=true", "amp_dtype=bf16", "channels_last=true"], True),
}
#: (run, variant, steps kind) in the order they are measured: the most wanted first
PLAN = [("dcvic_step1_2", "fp32", "loss"), ("dcvic_step1_2", "bf16_cl", "loss"), ("dcvic_step1_2", "bf16", "timed"),
        ("dcvic_step1_3", "fp32", "timed"), ("dcvic_step1_3", "bf16", "timed"), ("dcvic_step1_3", "bf16_cl", "timed"),
        ("vqgan_f8", "fp32", "timed"), ("vqgan_f8", "bf16_cl", "timed"),
        ("dcvic_step1_2", "bf16_cl_compile", "timed"), ("dcvic_step1_3", "bf16_cl_compile", "timed")]
#: logged scalars that are loss terms (their sum is the step's loss)
LOSS_TERMS = ("rate", "distortion", "perceptual", "code_distortion", "code_ce", "adv", "rec", "quant", "gan")
#: goals of the issue: bf16 + channels_last speed-up, and the largest relative loss difference called equal
GOAL_SPEEDUP, GOAL_LOSS_REL = 1.5, 0.05
#: the toy DDP run (both forms: it checks the start, not the speed)
DDP_CONFIG = "config/quickstart/stage1_2.yaml"


class Budget:
    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


# ------------------------------------------------------------------------------------------ helpers
def synchronize(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    try:  # Linux: writing 5 to clear_refs resets the process's peak resident size (VmHWM)
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def peak_mb(device):
    """Peak memory since :func:`reset_peak`: allocated CUDA memory, or the process's peak RSS on the CPU."""
    import torch

    if torch.device(device).type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def free_memory(device) -> None:
    import gc

    import torch

    gc.collect()
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()


def dynamo_counters():
    """torch.compile's event counters (graphs compiled, graph breaks, by reason)."""
    from torch._dynamo.utils import counters

    return counters


def tensor_hash(t) -> str:
    return hashlib.sha256(t.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def step_loss(logs: dict) -> float:
    return float(sum(float(v) for k, v in logs.items() if k in LOSS_TERMS))


def data_overrides(args, form: dict) -> list:
    data = ("dataset.train_dataset={type: ImageDataset, root_dir: '%s', sample_photos: true, image_size: %d}"
            % (Path(args.work_dir) / "sample_photos", form["image_size"]))
    return [f"ckpt_dir={Path(args.work_dir) / 'ckpt'}", "eval_step=null", "log_step=100000", "save_step=100000",
            f"dataset.batch_size={form['batch']}", "dataset.num_workers=0", data]


# ------------------------------------------------------------------------------------------ training
def train_run(args, form: dict, run: str, variant: str, steps: int, budget: Budget) -> dict:
    """Train ``steps`` steps of ``run`` in ``variant``: it/s after the warm-up, peak memory, losses, NaN."""
    import torch

    from src.trainer import NonFiniteLossError, build_trainer
    from src.utils.config import load_config

    configs, opts = RUNS[run]
    overrides, compiled = VARIANTS[variant]
    cfg = load_config(ROOT / configs[args.width], opts + data_overrides(args, form) + overrides)
    trainer = build_trainer(cfg, exp_name=f"check_{run}_{variant}", device=args.device, auto_resume=False,
                            dry_run=True)
    if compiled:
        dynamo_counters().clear()
        trainer.net = torch.compile(trainer.net)
    warmup = min(form["warmup"], steps - 1)
    res = {"steps_planned": steps, "warmup_steps": warmup, "nan": False}
    batches = iter(trainer.train_loader)
    times, losses = [], []
    reset_peak(args.device)
    warmup_s = 0.0
    try:
        for i in range(steps):
            batch = trainer._to_device(next(batches))
            synchronize(args.device)
            t = time.perf_counter()
            trainer.model.train()
            logs = trainer.train_step(batch, i)
            synchronize(args.device)
            dt = time.perf_counter() - t
            if i < warmup:
                warmup_s += dt
            else:
                times.append(dt)
            loss = step_loss(logs)
            if not all(math.isfinite(float(v)) for v in logs.values()):
                res["nan"] = True
                res["error"] = f"non-finite logged value at step {i}: {logs}"
                break
            losses.append(loss)
            if budget.left() < 0:
                res["stopped"] = f"time budget spent after {i + 1} steps"
                break
    except NonFiniteLossError as e:
        res["nan"], res["error"] = True, str(e)
    res["steps_done"] = len(losses)
    res["warmup_s"] = warmup_s
    if times:
        res["it_per_s"] = len(times) / sum(times)
        if compiled:  # the warm-up steps minus what they would take once compiled
            res["compile_s"] = max(0.0, warmup_s - warmup / res["it_per_s"])
    if compiled:  # recompilations after the warm-up would show as a low it/s: count graphs and breaks
        counters = dynamo_counters()
        res["dynamo_graphs"] = int(counters["stats"].get("unique_graphs", 0))
        res["dynamo_graph_breaks"] = int(sum(counters["graph_break"].values()))
    res["peak_mem_MB"] = peak_mb(args.device)
    if losses:
        tail = losses[-max(1, len(losses) // 10):]
        res.update(loss_first=losses[0], loss_last=sum(tail) / len(tail), loss_last_steps=len(tail))
    del trainer, batches
    free_memory(args.device)
    return res


def training_section(args, form: dict, budget: Budget) -> dict:
    out: dict = {}
    for run, variant, kind in PLAN:
        if run not in args.runs or variant not in args.variants:
            continue
        slot = out.setdefault(run, {})
        if VARIANTS[variant][1] and args.device == "cpu" and not args.compile:
            slot[variant] = {"skipped": "torch.compile on the CPU (pass --compile to run it)"}
            continue
        if budget.left() <= 0:
            slot[variant] = {"skipped": "time budget spent (--budget_s)"}
            continue
        steps = args.loss_steps if kind == "loss" else args.steps
        done = slot.get("fp32", {}).get("steps_done") or 0
        if kind == "loss" and variant != "fp32" and done >= 2:
            steps = done  # compare the losses over as many steps as fp32 made within the budget
        t = time.perf_counter()
        try:
            slot[variant] = train_run(args, form, run, variant, steps, budget)
        except Exception as e:  # one failing variant (out of memory, compile error) must not lose the others
            slot[variant] = {"error": f"{type(e).__name__}: {e}"}
            free_memory(args.device)
        slot[variant]["wall_s"] = time.perf_counter() - t
        print(f"  {run} {variant}: {_brief(slot[variant])}", flush=True)
    return out


def _brief(r: dict) -> str:
    if "it_per_s" in r:
        return f"{r['it_per_s']:.3g} it/s, loss {r.get('loss_last', float('nan')):.4g}, nan {r['nan']}"
    return r.get("error") or r.get("skipped") or "no timed step"


# ------------------------------------------------------------------------------------------ codec
def codec_section(args, form: dict, budget: Budget) -> dict:
    """Coding speed of a photo on the device, and y_hat across devices (encode on one, decode on the other)."""
    import copy

    import torch

    from scripts.benchmark import photo
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    config = ROOT / ("config/dc_vic_patchgan.yaml" if args.width == "full" else "config/quickstart/stage3.yaml")
    torch.manual_seed(0)
    cpu_model, _ = load_codec(config, None, "cpu", ["subnet.vq_model.ckpt_path=null"])
    dev_model = copy.deepcopy(cpu_model).to(args.device)
    w, h = form["photo"]
    x = photo(h, w)
    res: dict = {"image": f"{w}x{h}"}

    coder = ImageCoder(dev_model, device=args.device)
    coder.decode(coder.encode(x, 1.0, 2.0).data)  # warm-up: kernels, cuDNN plans, allocator
    synchronize(args.device)
    t = time.perf_counter()
    enc = coder.encode(x, 1.0, 2.0)
    t_enc = time.perf_counter() - t
    t = time.perf_counter()
    x_hat, _ = coder.decode(enc.data)
    t_dec = time.perf_counter() - t
    res["on_device"] = {"compress_s": t_enc, "decompress_s": t_dec, "bytes": len(enc.data), "bpp": enc.real_bpp,
                        "decoded_shape_ok": tuple(x_hat.shape) == tuple(x.shape),
                        "finite": bool(torch.isfinite(x_hat).all())}

    models = {args.device: dev_model, "cpu": cpu_model}
    pairs = [(args.device, "cpu"), ("cpu", args.device)] if args.device != "cpu" else [("cpu", "cpu")]
    res["cross_device"] = {}
    for src_dev, dst_dev in pairs:
        if budget.left() <= 0:
            res["cross_device"][f"{src_dev}->{dst_dev}"] = {"skipped": "time budget spent (--budget_s)"}
            continue
        res["cross_device"][f"{src_dev}->{dst_dev}"] = cross_device(models[src_dev], models[dst_dev], x)
    return res


def cross_device(encoder, decoder, x) -> dict:
    """Encode with ``encoder``; y_hat as the encoding side has it and as ``decoder`` decodes it, hashed."""
    import torch

    dev = next(encoder.parameters()).device
    betas = (torch.tensor([1.0], device=dev), torch.tensor([2.0], device=dev))
    enc = encoder.compress(x.to(dev), *betas)
    # the encoder's own y_hat when compress returns it, else the encoding side's entropy decoding
    y_enc = enc["y_hat"] if "y_hat" in enc else encoder.decompress_latent(enc["strings"], enc["shape"])
    res = {"encoder_hash": tensor_hash(y_enc), "y_hat_from": "compress" if "y_hat" in enc else "decompress_latent"}
    try:
        y_dec = decoder.decompress_latent(enc["strings"], enc["shape"])
    except Exception as e:  # a desynchronised decoder raises (EntropyDesyncError): report it as a mismatch
        return res | {"decoder_hash": None, "equal": False, "error": f"{type(e).__name__}: {e}"}
    return res | {"decoder_hash": tensor_hash(y_dec), "equal": bool(torch.equal(y_enc.float().cpu(),
                                                                                y_dec.float().cpu()))}


# ------------------------------------------------------------------------------------------ DDP
def ddp_section(args, form: dict, budget: Budget) -> dict:
    """A 1-process torchrun start of a toy training run on the device: backend, DDP wrap, checkpoint."""
    report = Path(args.work_dir) / "ddp_child.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1",
           str(Path(__file__).resolve()), "--ddp_child", str(report), "-d", args.device, "--work_dir", args.work_dir]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(60.0, budget.left()))
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": "torchrun did not finish within the time budget"}
    wall = time.perf_counter() - t
    if proc.returncode != 0 or not report.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-12:]
        return {"ok": False, "returncode": proc.returncode, "wall_s": wall, "error": "\n".join(tail)}
    res = json.loads(report.read_text())
    expected = "nccl" if args.device.startswith("cuda") else "gloo"
    res.update(wall_s=wall, expected_backend=expected,
               ok=res["backend"] == expected and res["ddp"] and res["world_size"] == 1 and res["checkpoint"])
    return res


def ddp_child(args) -> int:
    """Run under torchrun by :func:`ddp_section`: two toy steps under DDP, then a report."""
    import torch
    import torch.distributed as tdist

    from src.trainer import build_trainer
    from src.utils import dist
    from src.utils.checkpoint import list_checkpoints
    from src.utils.config import load_config

    form = FORMS["toy"]
    opts = RUNS["dcvic_step1_2"][1] + data_overrides(args, form) + ["total_iter=2", "save_step=2"]
    cfg = load_config(ROOT / DDP_CONFIG, opts)
    t = time.perf_counter()
    trainer = build_trainer(cfg, exp_name="check_ddp", device=args.device, auto_resume=False)
    start_s = time.perf_counter() - t
    report = {"backend": tdist.get_backend() if dist.is_distributed() else None, "world_size": dist.world_size(),
              "ddp": isinstance(trainer.net, torch.nn.parallel.DistributedDataParallel),
              "device": str(trainer.device), "start_s": start_s}
    t = time.perf_counter()
    report["iterations"] = trainer.train()
    report["train_s"] = time.perf_counter() - t
    report["checkpoint"] = 2 in list_checkpoints(cfg.ckpt_dir, "check_ddp")
    if dist.is_main_process():
        Path(args.ddp_child).write_text(json.dumps(report))
    dist.cleanup()
    return 0


# ------------------------------------------------------------------------------------------ report
def environment(args, form: dict) -> dict:
    import torch

    from scripts.benchmark import machine

    env = machine() | {"device": args.device, "form": args.width, "batch": form["batch"],
                       "image_size": form["image_size"], "steps": args.steps, "warmup_steps": form["warmup"],
                       "loss_steps": args.loss_steps}
    if torch.cuda.is_available():
        env |= {"cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "tf32_matmul": torch.backends.cuda.matmul.allow_tf32, "tf32_cudnn": torch.backends.cudnn.allow_tf32,
                "cudnn_benchmark": torch.backends.cudnn.benchmark}
    return env


def summarize(result: dict) -> dict:
    """The issue's goals read off the sections (None where a figure is missing)."""
    s12 = result.get("training", {}).get("dcvic_step1_2", {})
    fp32, fast = s12.get("fp32", {}), s12.get("bf16_cl", {})
    out: dict = {"speedup_bf16_cl": None, "loss_fp32": fp32.get("loss_last"), "loss_bf16_cl": fast.get("loss_last"),
                 "loss_rel_diff": None, "steps_compared": None}
    if fp32.get("it_per_s") and fast.get("it_per_s"):
        out["speedup_bf16_cl"] = fast["it_per_s"] / fp32["it_per_s"]
    if out["loss_fp32"] is not None and out["loss_bf16_cl"] is not None:
        a, b = fp32["steps_done"], fast["steps_done"]
        out["steps_compared"] = a if a == b else f"{a} (fp32) / {b}"
        out["loss_rel_diff"] = abs(out["loss_bf16_cl"] - out["loss_fp32"]) / max(abs(out["loss_fp32"]), 1e-12)
    runs = [r for variants in result.get("training", {}).values() for r in variants.values()]
    out["nan_free"] = not any(r.get("nan") for r in runs)
    out["speed_goal_met"] = out["speedup_bf16_cl"] is not None and out["speedup_bf16_cl"] >= GOAL_SPEEDUP
    out["loss_goal_met"] = out["loss_rel_diff"] is not None and out["loss_rel_diff"] <= GOAL_LOSS_REL
    cross = result.get("codec", {}).get("cross_device", {})
    out["cross_device_equal"] = bool(cross) and all(c.get("equal") for c in cross.values())
    out["ddp_ok"] = bool(result.get("ddp", {}).get("ok"))
    return out


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def to_markdown(result: dict) -> str:
    env, s = result["environment"], result["summary"]
    mem = "GPU max allocated" if str(env["device"]).startswith("cuda") else "process peak RSS"
    lines = ["# GPU check", "",
             f"`scripts/gpu_check.py`, {env['form']} form, device {env['device']} ({env.get('cuda') or env['cpu']}), "
             f"torch {env['torch']}, batch {env['batch']} of {env['image_size']}x{env['image_size']}, "
             f"{env['warmup_steps']} warm-up steps excluded, {result['elapsed_s']:.0f} s in all.", "",
             "## Summary", "", "| figure | value | goal |", "|---|---|---|",
             f"| step 1-2 it/s, bf16 + channels_last / fp32 | {_fmt(s['speedup_bf16_cl'], 3)} | >= {GOAL_SPEEDUP} |",
             f"| step 1-2 loss after {_fmt(s['steps_compared'])} steps, fp32 / bf16 + channels_last | "
             f"{_fmt(s['loss_fp32'])} / {_fmt(s['loss_bf16_cl'])} (relative difference {_fmt(s['loss_rel_diff'], 2)}) "
             f"| <= {GOAL_LOSS_REL} |",
             f"| no NaN in any training run | {_fmt(s['nan_free'])} | yes |",
             f"| y_hat bit-identical across devices | {_fmt(s['cross_device_equal'])} | yes |",
             f"| 1-process torchrun start ({result.get('ddp', {}).get('expected_backend', '-')}) | {_fmt(s['ddp_ok'])} "
             "| yes |", "",
             "## Training", "",
             f"| run | variant | it/s | x fp32 | peak memory MB ({mem}) | warm-up s | compile s | steps | "
             "first loss | last loss | NaN |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for run, variants in result.get("training", {}).items():
        base = variants.get("fp32", {}).get("it_per_s")
        for variant, r in variants.items():
            if "it_per_s" not in r and "loss_first" not in r:
                lines.append(f"| {run} | {variant} | {r.get('error') or r.get('skipped') or '-'} |  |  |  |  |  |  |  |  |")
                continue
            ratio = r["it_per_s"] / base if base and r.get("it_per_s") else None
            compile_cell = _fmt(r.get("compile_s"), 3)
            if "dynamo_graphs" in r:
                compile_cell += f" ({r['dynamo_graphs']} graphs, {r['dynamo_graph_breaks']} breaks)"
            lines.append(f"| {run} | {variant} | {_fmt(r.get('it_per_s'), 3)} | {_fmt(ratio, 3)} | "
                         f"{_fmt(r.get('peak_mem_MB'), 5)} | {_fmt(r.get('warmup_s'), 3)} | {compile_cell} "
                         f"| {r['steps_done']} | {_fmt(r.get('loss_first'))} | {_fmt(r.get('loss_last'))} | "
                         f"{_fmt(r['nan'])} |")
    codec = result.get("codec", {})
    lines += ["", "## Coding", ""]
    if "on_device" in codec:
        d = codec["on_device"]
        lines += [f"{codec['image']} photo on {env['device']}, random weights: compress {_fmt(d['compress_s'], 3)} s, "
                  f"decompress {_fmt(d['decompress_s'], 3)} s, {d['bytes']} bytes, decoded size right "
                  f"{_fmt(d['decoded_shape_ok'])}, finite {_fmt(d['finite'])}.", "",
                  "| encoded on -> decoded on | y_hat hash (encoder) | y_hat hash (decoder) | bit-identical |",
                  "|---|---|---|---|"]
        for pair, c in codec.get("cross_device", {}).items():
            lines.append(f"| {pair} | {c.get('encoder_hash', '-')} | {c.get('decoder_hash') or c.get('error', '-')} | "
                         f"{_fmt(c.get('equal'))} |")
    else:
        lines.append(codec.get("error") or codec.get("skipped") or "-")
    ddp = result.get("ddp", {})
    lines += ["", "## torchrun", "",
              f"backend {ddp.get('backend')} (expected {ddp.get('expected_backend')}), world size "
              f"{ddp.get('world_size')}, DDP {_fmt(ddp.get('ddp'))}, checkpoint written {_fmt(ddp.get('checkpoint'))}, "
              f"{_fmt(ddp.get('wall_s'), 3)} s" + (f"; error: {ddp['error']}" if ddp.get("error") else "."), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "gpu_check"), help="folder of gpu_check.json / .md")
    p.add_argument("-d", "--device", default=None, help="cuda, cuda:N or cpu (default: cuda when there is one)")
    p.add_argument("--width", choices=sorted(FORMS), default=None,
                   help="full (published widths) or toy (quickstart widths); default full on CUDA, toy on the CPU")
    p.add_argument("--steps", type=int, default=None, help="steps of each timed run, warm-up included")
    p.add_argument("--loss_steps", type=int, default=None,
                   help="steps of the fp32 and bf16 + channels_last step 1-2 runs whose losses are compared")
    p.add_argument("--budget_s", type=float, default=None, help="stop starting new measurements after this")
    p.add_argument("--runs", default=",".join(RUNS), help=f"training runs to measure (default: {','.join(RUNS)})")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help=f"precision variants to measure (default: {','.join(VARIANTS)})")
    p.add_argument("--compile", action="store_true", help="run the torch.compile variants on the CPU too")
    p.add_argument("--work_dir", default=None, help="data and checkpoints (default: a temporary folder)")
    p.add_argument("--ddp_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name, known in (("runs", RUNS), ("variants", VARIANTS)):
        chosen = [v for v in getattr(args, name).split(",") if v]
        unknown = sorted(set(chosen) - set(known))
        if unknown:
            p.error(f"--{name}: unknown {', '.join(unknown)}; known: {', '.join(known)}")
        setattr(args, name, chosen)

    try:
        import compressai  # noqa: F401  (the device image may lack it: docs/benchmarks.md says how to carry it)
    except ImportError as e:
        print(f"error: {e}; install the project's dependencies first (docs/benchmarks.md, GPU check)",
              file=sys.stderr)
        return 2
    import torch

    if args.device is None:
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: device {args.device!r} requested but CUDA is not available; use -d cpu", file=sys.stderr)
        return 2
    if args.ddp_child:
        return ddp_child(args)
    args.width = args.width or ("full" if args.device.startswith("cuda") else "toy")
    form = FORMS[args.width]
    args.steps = args.steps or form["steps"]
    args.loss_steps = args.loss_steps or form["loss_steps"]
    if args.steps < 2 or args.loss_steps < 2:
        p.error("--steps and --loss_steps must be at least 2 (one warm-up step, one timed step)")
    budget = Budget(args.budget_s if args.budget_s is not None else form["budget_s"])
    # fp32 means fp32: no TF32 in matrix products or convolutions
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        args.work_dir = args.work_dir or tmp
        t0 = time.perf_counter()
        result: dict = {"environment": environment(args, form)}
        for name, section in (("ddp", ddp_section), ("codec", codec_section), ("training", training_section)):
            t = time.perf_counter()
            print(f"{name} ...", flush=True)
            try:
                result[name] = section(args, form, budget)
            except Exception as e:  # one failing section must not lose the others
                result[name] = {"error": f"{type(e).__name__}: {e}"}
            print(f"{name}: {time.perf_counter() - t:.1f} s", flush=True)
    result["elapsed_s"] = time.perf_counter() - t0
    result["summary"] = summarize(result)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(result, indent=2, default=str))
    (out / "gpu_check.md").write_text(to_markdown(result))
    print(to_markdown(result))
    print(f"wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
