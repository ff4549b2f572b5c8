"""scripts/gpu_check.py in its CPU (toy) form, in a subprocess: the JSON's figures, the markdown table,
bit-identical y_hat CPU -> CPU, the 1-process torchrun (gloo) start and bf16 + channels_last training.

bf16 convolutions are slow on CPUs without bf16 units, so the test measures step 1-2 only, in fp32 and
bf16 + channels_last, with the fewest steps (one warm-up, one timed)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_form_writes_the_json_and_the_table(tmp_path):
    out = tmp_path / "out"
    env = dict(os.environ, WANDB_MODE="disabled", OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    cmd = [sys.executable, "scripts/gpu_check.py", "--out", str(out), "--runs", "dcvic_step1_2",
           "--variants", "fp32,bf16_cl", "--steps", "2", "--loss_steps", "2", "--work_dir", str(tmp_path / "work")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=400)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / "gpu_check.json").read_text())

    env_ = result["environment"]
    assert (env_["device"], env_["form"], env_["batch"], env_["image_size"]) == ("cpu", "toy", 2, 64)

    runs = result["training"]
    assert list(runs) == ["dcvic_step1_2"] and list(runs["dcvic_step1_2"]) == ["fp32", "bf16_cl"]
    for variant, r in runs["dcvic_step1_2"].items():
        assert r["steps_done"] == 2 and r["nan"] is False, (variant, r)
        assert r["it_per_s"] > 0 and r["peak_mem_MB"] > 100
        assert math.isfinite(r["loss_first"]) and math.isfinite(r["loss_last"])
    fp32, fast = runs["dcvic_step1_2"]["fp32"], runs["dcvic_step1_2"]["bf16_cl"]
    # same weights, same batch, same betas: the first losses differ only by bf16 rounding
    assert abs(fast["loss_first"] - fp32["loss_first"]) <= 0.02 * abs(fp32["loss_first"])

    codec = result["codec"]
    assert codec["on_device"]["decoded_shape_ok"] and codec["on_device"]["finite"]
    assert codec["on_device"]["bytes"] > 0
    pair = codec["cross_device"]["cpu->cpu"]
    assert pair["equal"] is True and pair["encoder_hash"] == pair["decoder_hash"]

    ddp = result["ddp"]
    assert ddp["ok"] is True, ddp
    assert (ddp["backend"], ddp["world_size"], ddp["ddp"], ddp["checkpoint"]) == ("gloo", 1, True, True)
    assert ddp["iterations"] == 2

    s = result["summary"]
    assert s["speedup_bf16_cl"] == fast["it_per_s"] / fp32["it_per_s"]
    assert (s["loss_fp32"], s["loss_bf16_cl"]) == (fp32["loss_last"], fast["loss_last"])
    assert s["nan_free"] and s["cross_device_equal"] and s["ddp_ok"]

    md = (out / "gpu_check.md").read_text()
    assert "| dcvic_step1_2 | fp32 |" in md and "| dcvic_step1_2 | bf16_cl |" in md
    assert "| cpu->cpu | %s | %s | yes |" % (pair["encoder_hash"], pair["decoder_hash"]) in md
    assert "backend gloo (expected gloo), world size 1, DDP yes, checkpoint written yes" in md
    assert "| no NaN in any training run | yes | yes |" in md


def test_summary_goals_and_table_from_a_gpu_shaped_result():
    """The summary's goals and the table, from figures shaped like a CUDA run's (no GPU needed)."""
    sys.path.insert(0, str(ROOT))
    from scripts.gpu_check import summarize, to_markdown

    run = {"steps_done": 200, "nan": False, "warmup_s": 3.0, "peak_mem_MB": 20000.0, "loss_first": 9.0}
    result = {
        "environment": {"device": "cuda", "cuda": "NVIDIA H100 80GB HBM3", "cpu": "x", "form": "full",
                        "torch": "2.11", "batch": 8, "image_size": 256, "warmup_steps": 3},
        "elapsed_s": 400.0,
        "training": {"dcvic_step1_2": {
            "fp32": run | {"it_per_s": 2.0, "loss_last": 4.00},
            "bf16_cl": run | {"it_per_s": 3.2, "loss_last": 4.10},
            "bf16_cl_compile": run | {"steps_done": 15, "it_per_s": 4.0, "compile_s": 90.0, "dynamo_graphs": 3,
                                      "dynamo_graph_breaks": 2, "loss_last": 4.2},
        }, "vqgan_f8": {"fp32": {"error": "OutOfMemoryError: CUDA out of memory"},
                        "bf16_cl": {"skipped": "time budget spent (--budget_s)"}}},
        "codec": {"image": "768x512", "on_device": {"compress_s": 0.5, "decompress_s": 0.9, "bytes": 4000,
                                                    "decoded_shape_ok": True, "finite": True},
                  "cross_device": {"cuda->cpu": {"encoder_hash": "aa", "decoder_hash": "aa", "equal": True},
                                   "cpu->cuda": {"encoder_hash": "bb", "decoder_hash": None, "equal": False,
                                                 "error": "EntropyDesyncError: y string 2"}}},
        "ddp": {"ok": True, "backend": "nccl", "expected_backend": "nccl", "world_size": 1, "ddp": True,
                "checkpoint": True, "wall_s": 20.0},
    }
    s = summarize(result)
    assert s["speedup_bf16_cl"] == 1.6 and s["speed_goal_met"]
    assert abs(s["loss_rel_diff"] - 0.025) < 1e-12 and s["loss_goal_met"] and s["steps_compared"] == 200
    assert s["nan_free"] and s["ddp_ok"]
    assert s["cross_device_equal"] is False                      # one direction failed to decode
    result["training"]["dcvic_step1_2"]["bf16_cl"] |= {"nan": True, "loss_last": 5.0, "steps_done": 120}
    s = summarize(result)
    assert not s["nan_free"] and not s["loss_goal_met"] and s["steps_compared"] == "200 (fp32) / 120"
    result["summary"] = s
    md = to_markdown(result)
    assert "device cuda (NVIDIA H100 80GB HBM3)" in md
    assert "| dcvic_step1_2 | bf16_cl_compile | 4 | 2 | 20000 | 3 | 90 (3 graphs, 2 breaks) | 15 |" in md
    assert "| vqgan_f8 | fp32 | OutOfMemoryError: CUDA out of memory |" in md
    assert "| cpu->cuda | bb | EntropyDesyncError: y string 2 | no |" in md
    assert "| step 1-2 it/s, bf16 + channels_last / fp32 | 1.6 | >= 1.5 |" in md
