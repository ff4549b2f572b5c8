"""The whole DC-VIC pipeline at toy scale, on the photos bundled with scikit-image.

    python scripts/quickstart.py -d cpu            # toy scale, minutes on a CPU (README: measured times)
    python scripts/quickstart.py -d cpu --retrain_warmup  # also train step 1-1 here instead of installing it
    python scripts/quickstart.py -d cpu --retrain_prior   # retrain the toy VQGAN prior, then step 1-1, first
    python scripts/quickstart.py --scale full      # print the full-size commands for a GPU cluster

Stages: step 1-1 (the warm-up without betas; shipped as checkpoint/quickstart_dcvic_warmup.pth and
installed, ``--retrain_warmup`` trains it) -> steps 1-2, 1-3 on the shipped toy f8 VQGAN prior
(checkpoint/quickstart_vqgan_prior.pth; ``--retrain_prior`` trains it and step 1-1 again first)
-> validation crop set -> rate search -> beta selection
-> stage-3 fine-tuning -> compress the evaluation photos to real files at each selected rate,
decode them as a receiver would, metrics -> RD plot, image strip and summary table.
Every stage runs the same command-line tool a user would run (printed in the log), writes its
output under ``--work_dir`` and is skipped when it already finished, so re-running resumes.
On a CPU with 2 cores or more the training steps run as 2 data-parallel processes (``torchrun``,
gloo; each trains on half of the configured batch) and the coding stages with 2 threads;
``--nproc 1`` keeps everything in one process on one thread.
Offline, FID in beta selection uses random features (its numbers mean nothing) and LPIPS is off.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIOR_CONFIGS = ("config/tokenizer/quickstart/quickstart_vqgan_prior.yaml",             # 64 px crops, then
                 "config/tokenizer/quickstart/quickstart_vqgan_prior_multisize.yaml")   # 256 px and 64 px
SHIPPED_PRIOR = ROOT / "checkpoint" / "quickstart_vqgan_prior.pth"
WARMUP_CONFIG = "config/quickstart/stage1_1.yaml"
SHIPPED_WARMUP = ROOT / "checkpoint" / "quickstart_dcvic_warmup.pth"
BETA_VQ = [1.0, 2.0, 3.0]
TARGET_FRACTIONS = (0.05, 0.5, 0.95)     # where the targets lie in the measured rate range (log scale)
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left")
EVAL_MAX_SIDE = 512                      # evaluation photos: long side at most this (the training scale)
VAL_TILES = 1                            # each photo gives VAL_TILES x VAL_TILES validation images
VAL_CROP = 256                           # validation crops: near the evaluated photos' size (build_valset)
STRIP_PHOTO = "astronaut"
SAMPLE_PHOTO_NAMES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
                      "motorcycle_left", "retina")  # src.data.datasets.SAMPLE_PHOTOS (that module imports numpy)


def export_prior(train_ckpt: Path, out: Path) -> None:
    """The VQGAN weights of a training checkpoint as a float16 state dict ``{"state_dict": ...}``
    (what ``subnet.vq_model.ckpt_path`` loads; no optimizer, no config)."""
    from src.models.vq.vqgan import vq_state_dict
    from src.utils.checkpoint import atomic_torch_save, load_file

    sd = vq_state_dict(load_file(train_ckpt))
    atomic_torch_save({"state_dict": {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}, out)


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_warmup(train_ckpt: Path, out: Path, prior: Path) -> None:
    """Step 1-1's weights from a training checkpoint, as shipped: the learned parameters in float16,
    the buffers as they are (float16 would turn the entropy models' likelihood bound, 1e-9, into 0
    and round the scale table), without the frozen VQGAN (``prior`` holds it), with the recipe it
    was trained from (``WARMUP_CONFIG``, loaded) and the SHA-256 of ``prior``, which
    ``install_warmup`` checks."""
    from src.models.codec.loading import build_codec
    from src.utils.checkpoint import atomic_torch_save, load_file

    recipe = load_recipe(WARMUP_CONFIG, [f"subnet.vq_model.ckpt_path={prior}"])
    learned = {name for name, _ in build_codec(recipe).named_parameters()}
    ckpt = load_file(train_ckpt)
    sd = {k: v.half() if k in learned else v for k, v in ckpt["comp_model"].items()
          if not k.startswith("vq_model.")}
    atomic_torch_save({"comp_model": sd, "iter": int(ckpt["iter"]), "recipe": load_recipe(WARMUP_CONFIG).to_dict(),
                       "prior_sha256": file_sha256(prior)}, out)


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def install_warmup(exported: Path, prior: Path, dst: Path) -> int:
    """An exported step 1-1 (``export_warmup``) as the training checkpoint ``dst`` that step 1-2
    loads (float32 again; the VQGAN comes from the prior when the model is built). Refused when the
    current ``WARMUP_CONFIG`` or ``prior`` is not the one it was trained with. Returns its iteration."""
    import torch

    from src.utils.checkpoint import atomic_torch_save, load_file

    payload = load_file(exported)
    recipe = load_recipe(WARMUP_CONFIG).to_dict()
    if payload["recipe"] != recipe:
        was, now = flat(payload["recipe"]), flat(recipe)
        changed = sorted(k for k in was.keys() | now.keys() if was.get(k) != now.get(k))
        raise SystemExit(f"{exported} was trained from another {WARMUP_CONFIG} (differing keys: "
                         f"{', '.join(changed[:6])}{', ...' if len(changed) > 6 else ''}): pass --retrain_warmup")
    if payload["prior_sha256"] != file_sha256(prior):
        raise SystemExit(f"{exported} was trained on another VQGAN prior than {prior}: pass --retrain_warmup")
    sd = {k: v.float() if v.dtype == torch.float16 else v for k, v in payload["comp_model"].items()}
    atomic_torch_save({"comp_model": sd, "iter": payload["iter"], "config": recipe}, dst)
    return int(payload["iter"])


def spread_targets(low: float, high: float, fractions=TARGET_FRACTIONS) -> list:
    """Target bitrates at ``fractions`` of the way from ``low`` to ``high`` bpp on a log scale."""
    if not 0 < low < high:
        raise SystemExit(f"the toy model's rate does not fall from beta_rate 0 to max ({high:.4f} -> {low:.4f} bpp): "
                         "no range to search in; see README, 'Quickstart'")
    return [round(low * (high / low) ** f, 4) for f in fractions]


def targets_over_bands(bands: dict) -> list:
    """Targets spread (``spread_targets``) over the union of ``bands``, ``{beta_vq: (bpp at beta_rate
    max, bpp at beta_rate 0)}``; each must lie in some beta_vq's band."""
    targets = spread_targets(min(low for low, _ in bands.values()), max(high for _, high in bands.values()))
    missed = [t for t in targets if not any(low <= t <= high for low, high in bands.values())]
    if missed:
        raise SystemExit(f"no beta_vq reaches the target(s) {missed} bpp: the bands {bands} leave a gap")
    return targets


def downscaled(src: Path, dst: Path, max_side: int) -> None:
    """``src`` resized (Lanczos) so that its long side is at most ``max_side``, saved as PNG."""
    from PIL import Image

    img = Image.open(src).convert("RGB")
    scale = max_side / max(img.size)
    if scale < 1:
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.LANCZOS)
    img.save(dst)


def default_nproc() -> int:
    """Training processes: 2 where this process may run on 2 CPUs or more (data-parallel, a global
    batch split in two), else 1."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return 2 if cpus >= 2 else 1


class Pipeline:
    def __init__(self, work: Path, device: str, retrain_prior: bool = False, nproc: int = 1,
                 retrain_warmup: bool = False):
        if nproc < 1:
            raise SystemExit(f"--nproc must be at least 1, got {nproc}")
        self.work, self.device, self.retrain_prior, self.nproc = work, device, retrain_prior, nproc
        self.retrain_warmup = retrain_warmup or retrain_prior     # step 1-1 is trained on the prior
        self.warmup = work / "quickstart_dcvic_warmup.pth" if self.retrain_warmup else SHIPPED_WARMUP
        self.ckpt = work / "checkpoint"
        self.photos = ROOT / "datasets" / "sample_photos"
        self.eval_photos = work / "eval_photos"
        self.prior = work / "quickstart_vqgan_prior.pth" if retrain_prior else SHIPPED_PRIOR
        self.valset = work / "valset" / "vq_f8_n256" / f"crop_{VAL_CROP}_{self.num_val}_seed_0"
        self.logs = work / "logs"
        # Training: nproc data-parallel processes of one intra-op thread each (on 2 idle cores, 2 processes
        # ran a step-1-1 step in 0.84 s against 1.28 s for one process; 2 threads in one process gained ~20%,
        # and on a busy machine ran at ~20 s/step). Coding and metrics: nproc threads in one process.
        # OMP_NUM_THREADS set by the caller wins in both.
        threads = os.environ.get("OMP_NUM_THREADS")
        self.train_env = {**os.environ, "OMP_NUM_THREADS": threads or "1"}
        self.env = {**os.environ, "OMP_NUM_THREADS": threads or str(nproc)}

    @property
    def num_val(self) -> int:
        return len(SAMPLE_PHOTO_NAMES) * VAL_TILES ** 2

    def model_of(self, exp: str) -> Path:
        from src.utils.checkpoint import checkpoint_path

        return checkpoint_path(self.ckpt, exp, total_iter_of(f"config/quickstart/{exp}.yaml"))

    def opts(self, *extra: str) -> list:
        return ["--opt", f"ckpt_dir={self.ckpt}", f"subnet.vq_model.ckpt_path={self.prior}", *extra]

    def vq_opt(self) -> list:
        return ["--opt", f"subnet.vq_model.ckpt_path={self.prior}"]

    def train(self, config: str, *extra: str) -> None:
        """Train ``config``; with nproc > 1, as nproc torchrun processes that split its batch
        (``extra``: overrides, after the pipeline's own)."""
        launcher, split = [sys.executable], []
        if self.nproc > 1:
            batch = int(load_recipe(config).dataset.batch_size)
            if batch % self.nproc:
                raise SystemExit(f"{config}: batch size {batch} does not split over --nproc {self.nproc} processes")
            launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={self.nproc}"]
            split = [f"dataset.batch_size={batch // self.nproc}"]
        self.run([*launcher, "scripts/train.py", config, "-d", self.device, *self.opts(*split, *extra)],
                 self.train_env)

    def selected_opts(self) -> list:
        sel = json.loads((self.work / "selection.json").read_text())
        return [f"model.selected_beta_rate={sel['beta_rate']}", f"model.selected_beta_vq={sel['beta_vq']}"]

    # ------------------------------------------------------------------ stages
    def stages(self):
        prior = [("VQGAN prior (retrained, tiny f8, 256 codes)", self.train_prior)] if self.retrain_prior else []
        return prior + [
            ("step 1-1 (rate-distortion warm-up, " + ("trained)" if self.retrain_warmup else "shipped, installed)"),
             self.warmup_step),
            ("step 1-2 (dual-beta rate-distortion)", lambda: self.train("config/quickstart/stage1_2.yaml")),
            ("step 1-3 (dual-beta GAN)", lambda: self.train("config/quickstart/stage1_3.yaml")),
            ("validation crop set", self.build_valset),
            ("rate search", self.rate_search),
            ("beta selection", self.beta_selection),
            ("stage 3 (selected-beta fine-tuning)", lambda: self.train("config/quickstart/stage3.yaml",
                                                                        *self.selected_opts())),
            ("compress / decompress / metrics", self.evaluate),
            ("RD plot and image strip", self.plot),
        ]

    def run(self, cmd: list, env: dict | None = None) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{self.current}.log"
        with open(log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            res = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT,
                                 env=env or self.env, check=False)
        if res.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"stage failed (exit {res.returncode}); log: {log}\n{tail}")

    def train_prior(self) -> None:
        from src.utils.checkpoint import checkpoint_path

        for config in PRIOR_CONFIGS:
            self.run([sys.executable, "scripts/train.py", config, "-d", self.device, "--opt", f"ckpt_dir={self.ckpt}"],
                     self.train_env)
        last = PRIOR_CONFIGS[-1]
        export_prior(checkpoint_path(self.ckpt, Path(last).stem, total_iter_of(last)), self.prior)

    def warmup_step(self) -> None:
        """Step 1-1: with --retrain_warmup trained here (into ``warmup_checkpoint/``) and exported as
        shipped; then, either way, the exported weights installed where step 1-2 loads them (so step
        1-2 starts from float16-rounded weights in both cases)."""
        from src.utils.checkpoint import checkpoint_path

        it = total_iter_of(WARMUP_CONFIG)
        if self.retrain_warmup:
            trained = self.work / "warmup_checkpoint"
            self.train(WARMUP_CONFIG, f"ckpt_dir={trained}")
            export_warmup(checkpoint_path(trained, "stage1_1", it), self.warmup, self.prior)
        install_warmup(self.warmup, self.prior, checkpoint_path(self.ckpt, "stage1_1", it))

    def build_valset(self) -> None:
        """Validation crops of VAL_CROP px of the full-size photos (each photo cut into VAL_TILES x
        VAL_TILES tiles, one seeded crop per tile). 256 px, larger than the training crops: the rates
        the rate search steers by must be those of images the size of the evaluated photos. On one
        model trained on 64 px crops, those crops spanned 0.0217-0.0226 bpp from beta_rate 3 to 0 and
        256 px crops 0.042-0.069 bpp, while the whole photos spanned 0.035-0.051 bpp."""
        from PIL import Image

        from src.data.datasets import export_sample_photos

        fake_root = self.work / "photos_as_openimage"
        (fake_root / "validation").mkdir(parents=True, exist_ok=True)
        for p in export_sample_photos(self.photos):
            img = Image.open(p).convert("RGB")
            tw, th = img.width // VAL_TILES, img.height // VAL_TILES
            for i in range(VAL_TILES):
                for j in range(VAL_TILES):
                    img.crop((j * tw, i * th, (j + 1) * tw, (i + 1) * th)).save(
                        fake_root / "validation" / f"{p.stem}_{i}{j}.png")
        self.run([sys.executable, "scripts/build_openimage_val_dataset.py", "--openimage_root", fake_root,
                  "--save_root", self.work / "valset", "--seed", "0", "--num_img", self.num_val,
                  "--crop_size", VAL_CROP, "--config", "config/quickstart/stage1_3.yaml", "--no_progress",
                  "-d", self.device, *self.vq_opt()])

    def targets(self) -> list:
        """Three bitrates spread (log scale) over the rates the toy model reaches on the validation
        crops: from the lowest bpp at beta_rate max to the highest at beta_rate 0 over the beta_vq
        candidates. Each beta_vq reaches a band of that range (a higher beta_vq costs more bits);
        beta selection compares the candidates whose search reached a target."""
        from src.models.codec.loading import load_codec
        from src.ratecontrol.rate import ModelRateFunction
        from src.ratecontrol.valset import load_val_set

        model, _ = load_codec(ROOT / "config/quickstart/stage1_3.yaml", self.model_of("stage1_3"), "cpu",
                              [f"subnet.vq_model.ckpt_path={self.prior}"])
        val = load_val_set(self.valset)
        top = max_beta_rate()
        bands = {vq: ModelRateFunction(model, val, vq, 8)([top, 0.0]) for vq in BETA_VQ}
        for vq, (low, high) in bands.items():
            print(f"      reachable rate at beta_vq {vq}: {low:.4f} (beta_rate {top:g}) .. {high:.4f} bpp (beta_rate 0)",
                  flush=True)
        return targets_over_bands(bands)

    def rate_search(self) -> None:
        targets = self.targets()
        (self.work / "targets.json").write_text(json.dumps(targets))
        self.run([sys.executable, "scripts/binary_rate_search.py", "config/quickstart/stage1_3.yaml", "--model_path",
                  self.model_of("stage1_3"), "--save_dir", self.work / "bin_search", "--dataset_root", self.valset,
                  "--batch_size", "8", "--max_beta_rate", max_beta_rate(), "--beta_vq", *BETA_VQ, "--target_rate", *targets,
                  "--error_delta", round(0.01 * min(targets), 5), "-d", self.device, *self.vq_opt()])

    def beta_selection(self) -> None:
        targets = json.loads((self.work / "targets.json").read_text())
        self.run([sys.executable, "scripts/beta_selection.py", "config/quickstart/stage1_3.yaml", "--model_path",
                  self.model_of("stage1_3"), "--save_dir", self.work / "beta_selection", "--search_dir",
                  self.work / "bin_search", "--dataset_root", self.valset, "--batch_size", "8", "--beta_vq", *BETA_VQ,
                  "--target_rate", *targets, "--fid_features", "random", "--patch_size", "32", "-d", self.device,
                  *self.vq_opt()])
        import pandas as pd

        sel = pd.read_csv(self.work / "beta_selection" / "beta_selection_results.csv").sort_values("target_rate")
        (self.work / "selection.json").write_text(json.dumps({
            "target_rate": sel.target_rate.tolist(), "beta_rate": [round(v, 4) for v in sel.selected_beta_rate],
            "beta_vq": [round(v, 4) for v in sel.selected_beta_vq]}))

    def evaluate(self) -> None:
        """Real files for the evaluation photos, downscaled to EVAL_MAX_SIDE (the toy model's scale)."""
        from src.data.datasets import export_sample_photos

        self.eval_photos.mkdir(parents=True, exist_ok=True)
        for p in export_sample_photos(self.photos, EVAL_PHOTOS):
            downscaled(p, self.eval_photos / p.name, EVAL_MAX_SIDE)
        n = len(json.loads((self.work / "selection.json").read_text())["beta_rate"])
        self.run([sys.executable, "scripts/eval_kodak.py", "--config_path", "config/quickstart/stage3.yaml",
                  "--model_path", self.model_of("stage3"), "--img_dir", self.eval_photos, "--save_dir", self.work / "eval",
                  "-q", *range(n), "--metrics", "psnr,ms_ssim", "--model_name", "toy", "-d", self.device,
                  *self.vq_opt(), *self.selected_opts()])

    def plot(self) -> None:
        self.run([sys.executable, "scripts/plot_rd.py", "--csv", str(self.work / "eval" / "rd.csv"),
                  "--out", str(self.work / "rd"), "--metrics", "psnr,ms_ssim", "--published", "none",
                  "--title", "quickstart (toy model, bundled photos)"])
        self.image_strip()

    def image_strip(self) -> Path:
        """original | lowest rate | highest rate of one evaluation photo, side by side, as PNG."""
        import pandas as pd
        from PIL import Image, ImageDraw

        df = pd.read_csv(self.work / "eval" / "rd.csv").sort_values("bpp")
        panels = [("original", Image.open(self.eval_photos / f"{STRIP_PHOTO}.png").convert("RGB"))]
        for row in (df.iloc[0], df.iloc[-1]):
            rec = self.work / "eval" / f"point_{row.quality:g}" / "decoded" / f"{STRIP_PHOTO}.png"
            panels.append((f"q{row.quality:g}: {row.bpp:.3f} bpp, {row.PSNR:.1f} dB (mean)", Image.open(rec).convert("RGB")))
        w, h = panels[0][1].size
        label_h = 16
        strip = Image.new("RGB", (w * len(panels), h + label_h), "white")
        draw = ImageDraw.Draw(strip)
        for i, (label, img) in enumerate(panels):
            strip.paste(img.resize((w, h)), (i * w, label_h))
            draw.text((i * w + 4, 2), label, fill="black")
        out = self.work / "strip.png"
        strip.save(out)
        return out

    def summary(self) -> str:
        import pandas as pd

        df = pd.read_csv(self.work / "eval" / "rd.csv")
        cols = [c for c in ("quality", "beta_rate", "beta_vq", "bpp", "pred_bpp", "PSNR", "MS-SSIM") if c in df]
        return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


def load_recipe(config: str, overrides=()):
    """A quickstart config (path relative to the repository), loaded (with ``overrides``)."""
    from src.utils.config import load_config

    return load_config(ROOT / config, list(overrides))


def total_iter_of(config: str) -> int:
    return int(load_recipe(config).total_iter)


def max_beta_rate() -> float:
    """The top of the toy model's beta_rate range (config/_base_/quickstart_beta_range.yaml)."""
    from src.models.codec.betas import BetaSpace

    cfg = load_recipe("config/quickstart/stage1_3.yaml")
    return BetaSpace.from_config(cfg.model, cfg.subnet).max_rate


FULL = """# The same pipeline at full size (see README "Training DC-VIC"); set dataset paths first.
python scripts/train.py config/exp1_stage1_1.yaml -d cuda          # or: torchrun --nproc_per_node=8 scripts/train.py ...
python scripts/train.py config/exp1_stage1_2.yaml -d cuda
python scripts/train.py config/exp1_stage1_3.yaml -d cuda
python scripts/build_openimage_val_dataset.py --vqgan_type f8-n256 --openimage_root ./datasets/openimage \\
    --save_root ./datasets/openimage_validation_vq --seed 0 --num_img 2000 -d cuda
python scripts/binary_rate_search.py config/exp1_stage1_3.yaml --model_path checkpoint/exp1_stage1_3/model/comp_model_iter500K.pth.tar \\
    --save_dir bin_search/exp1_stage1_3 --dataset_root datasets/openimage_validation_vq/vq_f8_n256/crop_256_2000_seed_0 \\
    --batch_size 16 --max_beta_rate 3.0 --beta_vq 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.25 2.5 2.75 3.0 3.25 3.5 \\
    --target_rate 0.05 0.075 0.1 0.125 0.15 -d cuda
python scripts/beta_selection.py config/exp1_stage1_3.yaml --model_path checkpoint/exp1_stage1_3/model/comp_model_iter500K.pth.tar \\
    --save_dir beta_selection/exp1_stage1_3 --search_dir bin_search/exp1_stage1_3 \\
    --dataset_root datasets/openimage_validation_vq/vq_f8_n256/crop_256_2000_seed_0 --batch_size 8 \\
    --beta_vq 0.25 0.5 0.75 1.0 1.25 1.5 1.75 2.0 2.25 2.5 2.75 3.0 3.25 3.5 --target_rate 0.05 0.075 0.1 0.125 0.15 -d cuda
# put the printed selected_beta_rate / selected_beta_vq into config/exp1_stage3.yaml, then:
python scripts/train.py config/exp1_stage3.yaml -d cuda
python scripts/eval_kodak.py --config_path config/exp1_stage3.yaml --model_path checkpoint/exp1_stage3/model/comp_model_iter500K.pth.tar \\
    --img_dir datasets/kodak --save_dir results/kodak -q 0 1 2 3 4 -d cuda
python scripts/plot_rd.py --csv results/kodak/rd.csv:ours --dataset kodak --out results/kodak/rd
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-d", "--device", default="cpu")
    p.add_argument("--work_dir", default=str(ROOT / "results" / "quickstart"))
    p.add_argument("--scale", choices=["toy", "full"], default="toy")
    p.add_argument("--retrain_prior", action="store_true",
                   help=f"train the toy VQGAN prior ({' then '.join(PRIOR_CONFIGS)}) instead of using the shipped "
                        f"{SHIPPED_PRIOR.relative_to(ROOT)}; writes <work_dir>/quickstart_vqgan_prior.pth")
    p.add_argument("--retrain_warmup", action="store_true",
                   help=f"train step 1-1 ({WARMUP_CONFIG}) instead of installing the shipped "
                        f"{SHIPPED_WARMUP.relative_to(ROOT)}; writes <work_dir>/quickstart_dcvic_warmup.pth")
    p.add_argument("--nproc", type=int, default=None,
                   help="training processes (torchrun, data-parallel; each gets batch / nproc crops) and coding "
                        "threads; default: 2 on a CPU with at least 2 cores, else 1")
    args = p.parse_args(argv)
    if args.scale == "full":
        print(FULL)
        return 0
    nproc = args.nproc if args.nproc is not None else (default_nproc() if args.device == "cpu" else 1)
    pipe = Pipeline(Path(args.work_dir).resolve(), args.device, args.retrain_prior, nproc, args.retrain_warmup)
    for shipped, flag, needed in ((SHIPPED_PRIOR, "--retrain_prior", not args.retrain_prior),
                                  (SHIPPED_WARMUP, "--retrain_warmup", not pipe.retrain_warmup)):
        if needed and not shipped.is_file():
            raise SystemExit(f"{shipped} is missing (it ships with the repository): restore it (git checkout) "
                             f"or pass {flag}")
    stages = pipe.stages()
    start = time.perf_counter()
    for i, (name, action) in enumerate(stages, 1):
        slug = name.split(" (")[0].replace(" ", "_").replace("/", "")
        marker = pipe.work / "done" / slug           # by name: --retrain_prior shifts the numbers
        pipe.current = f"{i:02d}_{slug}"
        if marker.exists():
            print(f"[{i:2d}/{len(stages)}] {name}: done earlier, skipped", flush=True)
            continue
        t = time.perf_counter()
        action()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        print(f"[{i:2d}/{len(stages)}] {name}: {time.perf_counter() - t:.0f} s", flush=True)
    print(f"\nall stages done in {time.perf_counter() - start:.0f} s; results in {pipe.work}")
    print(f"RD plot: {pipe.work / 'rd.png'}\nimage strip (original | lowest | highest rate): "
          f"{pipe.work / 'strip.png'}\n\n{pipe.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
