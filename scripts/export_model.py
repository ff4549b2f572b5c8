"""Write a model file for coding: the weights and the entropy coder's tables, built once.

    python scripts/export_model.py --config_path config/dc_vic_patchgan.yaml \
        --model_path dc_vic_patchgan.pth.tar --out checkpoint/dc_vic_patchgan_coding.pth.tar

A stream decodes only with the tables it was coded with (CDFs, offsets, lengths, scale table), and
the stream's fingerprint covers them. Tables rebuilt on another machine can differ in their last
bits (other CPU kernels), so senders and receivers should load the same file, with the tables in
it. Our training checkpoints store them (built when each checkpoint is saved); released
checkpoints and older ones may not: this script builds the missing tables (or, with --rebuild,
all of them) and writes ``{"comp_model": state dict, "fingerprint": hex}``. Give the file to
compress.py / decompress.py / eval_kodak.py as --model_path on every machine.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from src.utils.cli import add_trust_checkpoint_flag  # noqa: E402  (light: no torch)
from src.utils.preflight import codec_inputs  # noqa: E402  (light: no torch)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config_path", required=True, help="the model's config")
    p.add_argument("--model_path", required=True, help="a training checkpoint or a released .pth.tar")
    p.add_argument("--out", required=True, help="file to write (its folder is created)")
    p.add_argument("--rebuild", action="store_true",
                   help="rebuild every table from the weights, also those the file already stores")
    add_trust_checkpoint_flag(p)
    p.add_argument("--opt", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if codec_inputs(args.config_path, args.opt, args.model_path).failed():
        return 2
    out = Path(args.out)
    if out.resolve() == Path(args.model_path).resolve():
        print("error: --out must differ from --model_path", file=sys.stderr)
        return 2

    import torch

    from src.models.codec.bitstream import model_fingerprint
    from src.models.codec.loading import has_entropy_tables, load_codec
    from src.utils.checkpoint import atomic_torch_save

    model, _ = load_codec(args.config_path, args.model_path, "cpu", args.opt, trust=args.trust_checkpoint)
    if args.rebuild:
        with torch.no_grad():
            model.update(force=True)
    if not has_entropy_tables(model):
        print("error: the model has no CompressAI entropy models, so there are no tables to export", file=sys.stderr)
        return 2
    fingerprint = model_fingerprint(model).hex()
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"comp_model": model.state_dict(), "fingerprint": fingerprint}, out)
    print(f"wrote {out} (fingerprint {fingerprint})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
