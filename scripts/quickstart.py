"""The whole DC-VIC pipeline at toy scale, on the photos bundled with scikit-image.

    python scripts/quickstart.py -d cpu            # toy scale; measured 82 min on a busy 2-core machine (README)
    python scripts/quickstart.py --scale full      # print the full-size commands for a GPU cluster

Stages: tiny f8 VQGAN prior -> steps 1-1, 1-2, 1-3 -> validation crop set -> rate search ->
beta selection -> stage-3 fine-tuning -> compress every photo to real files at each selected
rate, decode them as a receiver would, metrics -> RD plot and summary table.
Every stage runs the same command-line tool a user would run (printed in the log), writes its
output under ``--work_dir`` and is skipped when it already finished, so re-running resumes.
Offline, FID in beta selection uses random features (its numbers mean nothing) and LPIPS is off.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

PRIOR_ITERS = 150
STEP_ITERS = {"stage1_1": 60, "stage1_2": 300, "stage1_3": 60, "stage3": 60}   # as in config/quickstart/
BETA_VQ = [1.0, 2.0, 3.0]
EVAL_PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "motorcycle_left")


class Pipeline:
    def __init__(self, work: Path, device: str):
        self.work, self.device = work, device
        self.ckpt = work / "checkpoint"
        self.photos = ROOT / "datasets" / "sample_photos"
        self.eval_photos = work / "eval_photos"
        self.prior = self.ckpt / "quickstart_vqgan_prior" / "model" / f"comp_model_iter{PRIOR_ITERS}.pth.tar"
        self.valset = work / "valset" / "vq_f8_n256" / "crop_128_8_seed_0"
        self.logs = work / "logs"

    def model_of(self, exp: str) -> Path:
        return self.ckpt / exp / "model" / f"comp_model_iter{STEP_ITERS[exp]}.pth.tar"

    def opts(self, *extra: str) -> list:
        return ["--opt", f"ckpt_dir={self.ckpt}", f"subnet.vq_model.ckpt_path={self.prior}", *extra]

    def vq_opt(self) -> list:
        return ["--opt", f"subnet.vq_model.ckpt_path={self.prior}"]

    def train(self, config: str, *extra: str) -> list:
        return [sys.executable, "scripts/train.py", config, "-d", self.device, *self.opts(*extra)]

    def selected_opts(self) -> list:
        sel = json.loads((self.work / "selection.json").read_text())
        return [f"model.selected_beta_rate={sel['beta_rate']}", f"model.selected_beta_vq={sel['beta_vq']}"]

    # ------------------------------------------------------------------ stages
    def stages(self):
        py = sys.executable
        return [
            ("VQGAN prior (tiny f8, 256 codes)", lambda: self.run([
                py, "scripts/train.py", "config/tokenizer/quickstart/quickstart_vqgan_prior.yaml", "-d", self.device,
                "--opt", f"ckpt_dir={self.ckpt}", f"total_iter={PRIOR_ITERS}", f"save_step={PRIOR_ITERS}",
                f"eval_step={PRIOR_ITERS}"])),
            ("step 1-1 (rate-distortion warm-up)", lambda: self.run(self.train("config/quickstart/stage1_1.yaml"))),
            ("step 1-2 (dual-beta rate-distortion)", lambda: self.run(self.train("config/quickstart/stage1_2.yaml"))),
            ("step 1-3 (dual-beta GAN)", lambda: self.run(self.train("config/quickstart/stage1_3.yaml"))),
            ("validation crop set", self.build_valset),
            ("rate search", self.rate_search),
            ("beta selection", self.beta_selection),
            ("stage 3 (selected-beta fine-tuning)", lambda: self.run(self.train(
                "config/quickstart/stage3.yaml", *self.selected_opts()))),
            ("compress / decompress / metrics", self.evaluate),
            ("RD plot", lambda: self.run([py, "scripts/plot_rd.py", "--csv", str(self.work / 'eval' / 'rd.csv'),
                                          "--out", str(self.work / "rd"), "--metrics", "psnr,ms_ssim", "--published", "none",
                                          "--title", "quickstart (toy model, bundled photos)"])),
        ]

    def run(self, cmd: list) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{self.current}.log"
        with open(log, "a") as f:
            f.write("$ " + " ".join(map(str, cmd)) + "\n")
            f.flush()
            res = subprocess.run([str(c) for c in cmd], cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
        if res.returncode != 0:
            tail = "".join(log.read_text().splitlines(keepends=True)[-15:])
            raise SystemExit(f"stage failed (exit {res.returncode}); log: {log}\n{tail}")

    def build_valset(self) -> None:
        fake_root = self.work / "photos_as_openimage"
        (fake_root / "validation").mkdir(parents=True, exist_ok=True)
        from src.data.datasets import export_sample_photos

        for p in export_sample_photos(self.photos):
            shutil.copy(p, fake_root / "validation" / p.name)
        self.run([sys.executable, "scripts/build_openimage_val_dataset.py", "--openimage_root", fake_root,
                  "--save_root", self.work / "valset", "--seed", "0", "--num_img", "8", "--crop_size", "128",
                  "--config", "config/quickstart/stage1_3.yaml", "--no_progress", "-d", self.device,
                  *self.vq_opt()])

    def targets(self) -> list:
        """Three bitrates inside the toy model's reachable range at the middle beta_vq (its bpp at
        beta_rate 3 and 0); the other beta_vq candidates compete where they reach them too."""
        from src.models.codec.loading import load_codec
        from src.ratecontrol.rate import ModelRateFunction
        from src.ratecontrol.valset import load_val_set

        model, _ = load_codec(ROOT / "config/quickstart/stage1_3.yaml", self.model_of("stage1_3"), "cpu",
                              [f"subnet.vq_model.ckpt_path={self.prior}"])
        high, low = ModelRateFunction(model, load_val_set(self.valset), BETA_VQ[1], 4)([0.0, 3.0])
        return [round(low + (high - low) * f, 4) for f in (0.2, 0.5, 0.8)]

    def rate_search(self) -> None:
        targets = self.targets()
        (self.work / "targets.json").write_text(json.dumps(targets))
        self.run([sys.executable, "scripts/binary_rate_search.py", "config/quickstart/stage1_3.yaml", "--model_path",
                  self.model_of("stage1_3"), "--save_dir", self.work / "bin_search", "--dataset_root", self.valset,
                  "--batch_size", "4", "--max_beta_rate", "3.0", "--beta_vq", *BETA_VQ, "--target_rate", *targets,
                  "--error_delta", "0.0005", "-d", self.device, *self.vq_opt()])

    def beta_selection(self) -> None:
        targets = json.loads((self.work / "targets.json").read_text())
        self.run([sys.executable, "scripts/beta_selection.py", "config/quickstart/stage1_3.yaml", "--model_path",
                  self.model_of("stage1_3"), "--save_dir", self.work / "beta_selection", "--search_dir",
                  self.work / "bin_search", "--dataset_root", self.valset, "--batch_size", "4", "--beta_vq", *BETA_VQ,
                  "--target_rate", *targets, "--fid_features", "random", "--patch_size", "64", "-d", self.device,
                  *self.vq_opt()])
        import pandas as pd

        sel = pd.read_csv(self.work / "beta_selection" / "beta_selection_results.csv").sort_values("target_rate")
        (self.work / "selection.json").write_text(json.dumps({
            "target_rate": sel.target_rate.tolist(), "beta_rate": [round(v, 4) for v in sel.selected_beta_rate],
            "beta_vq": [round(v, 4) for v in sel.selected_beta_vq]}))

    def evaluate(self) -> None:
        """Real files for the photos up to 1000 px (the larger ones only cost time at toy scale)."""
        from src.data.datasets import export_sample_photos

        self.eval_photos.mkdir(parents=True, exist_ok=True)
        for p in export_sample_photos(self.photos, EVAL_PHOTOS):
            shutil.copy(p, self.eval_photos / p.name)
        n = len(json.loads((self.work / "selection.json").read_text())["beta_rate"])
        self.run([sys.executable, "scripts/eval_kodak.py", "--config_path", "config/quickstart/stage3.yaml",
                  "--model_path", self.model_of("stage3"), "--img_dir", self.eval_photos, "--save_dir", self.work / "eval",
                  "-q", *range(n), "--metrics", "psnr,ms_ssim", "--model_name", "toy", "-d", self.device,
                  *self.vq_opt(), *self.selected_opts()])

    def summary(self) -> str:
        import pandas as pd

        df = pd.read_csv(self.work / "eval" / "rd.csv")
        cols = [c for c in ("quality", "beta_rate", "beta_vq", "bpp", "pred_bpp", "PSNR", "MS-SSIM") if c in df]
        return df[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}")


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
    args = p.parse_args(argv)
    if args.scale == "full":
        print(FULL)
        return 0
    pipe = Pipeline(Path(args.work_dir).resolve(), args.device)
    stages = pipe.stages()
    start = time.perf_counter()
    for i, (name, action) in enumerate(stages, 1):
        marker = pipe.work / "done" / f"{i:02d}"
        pipe.current = f"{i:02d}_{name.split(' (')[0].replace(' ', '_').replace('/', '')}"
        if marker.exists():
            print(f"[{i:2d}/{len(stages)}] {name}: done earlier, skipped", flush=True)
            continue
        t = time.perf_counter()
        action()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.touch()
        print(f"[{i:2d}/{len(stages)}] {name}: {time.perf_counter() - t:.0f} s", flush=True)
    print(f"\nall stages done in {time.perf_counter() - start:.0f} s; results in {pipe.work}")
    print(f"RD plot: {pipe.work / 'rd.png'}\n\n{pipe.summary()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
