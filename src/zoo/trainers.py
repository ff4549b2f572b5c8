"""Trainers of the tokenizer zoo: VQ-KD and Cluster, pixel decoders, the AR proposal network.

* :class:`FeatureTokenizerTrainer` - VQ-KD (Peng et al., BEiT v2, 2022) and Cluster: the model
  returns predicted and teacher features; ``loss = mean(1 - cos(f_hat, f)) + codebook_weight *
  quantizer loss``. Cluster trains only its codebook (``codebook: gradient``, the seed's: by the
  codebook loss) or nothing at all (``codebook: ema``: EMA k-means, no optimiser); its logged ``rec``
  is the k-means objective.
* :class:`PixelDecoderTrainer` - a VQGAN decoder on a frozen VQ-KD / Cluster tokenizer, with the
  losses of :class:`~src.trainer.vqgan_trainer.VQGANTrainer` (taming-transformers).
* :class:`OneDTokenizerTrainer` - the two-stage 1D tokenizer (``OneDTokenizer``): VQGAN-style
  losses with MSE, LPIPS for the first ``loss.lpips_until`` iterations, a classifier-logit
  perceptual loss (``loss.perceptual``) and the GAN after ``trainer.disc_start``; stage 2 starts
  from a stage-1 run (``load_checkpoint``) with the encoder and codebook frozen.
* :class:`ARTrainer` - LlamaGen (Sun et al., 2024) next-token cross-entropy on pre-tokenized
  ``.npy`` grids; validation adds token loss / accuracy and, with a tokenizer checkpoint and an FID
  cache (``scripts/fid_cache.py``), generation FID of guided samples.

The frozen tokenizer of the last two comes from ``tokenizer_checkpoint`` (config key) or
``load_model_from`` (``--opt load_model_from=PATH``): a checkpoint of ``scripts/train.py`` whose
``comp_model`` is loaded (``tokenizer_strict``, default true) and whose ``config.model`` fills a
missing ``model.tokenizer`` section. A resume then loads the whole model, tokenizer included, from
the run's own checkpoint, so the two combine without key clashes.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

import src.zoo.ar  # noqa: F401  (LlamaC2I, TokenDataset)
import src.zoo.tokenizers  # noqa: F401  (VQKD, ClusterTokenizer, PixelDecoder)
from src.models.vq.quantizers import usage_from_counts
from src.trainer import sharding
from src.trainer.base_trainer import BaseTrainer
from src.trainer.optim import build_optimizer
from src.trainer.vqgan_trainer import VQGANTrainer, optional_loss
from src.utils.checkpoint import load_file, load_model_state
from src.utils.paths import resolve_input
from src.utils.registry import MODELS, TRAINERS
from src.zoo.ar.data import collate_tokens
from src.zoo.ar.sampling import sample
from src.zoo.tokenizers.teachers import require_teachers

log = logging.getLogger(__name__)


def tokenizer_source(cfg: Mapping[str, Any]) -> Optional[str]:
    """``tokenizer_checkpoint`` or ``load_model_from`` of a config (None if neither is set)."""
    return cfg.get("tokenizer_checkpoint") or cfg.get("load_model_from")


def read_tokenizer_checkpoint(path: str) -> Tuple[Optional[Dict[str, Any]], Dict[str, torch.Tensor]]:
    """(model section of the run's config or None, ``comp_model`` state) of a training checkpoint."""
    ckpt = load_file(resolve_input(path, "file"))
    if not isinstance(ckpt, dict) or "comp_model" not in ckpt:
        raise KeyError(f"{path} is not a checkpoint of scripts/train.py (no 'comp_model')")
    return (ckpt.get("config") or {}).get("model"), ckpt["comp_model"]


def cosine_distance(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``1 - cos`` along the channel axis of (B, D, h, w) maps (BEiT v2)."""
    return (1.0 - F.cosine_similarity(pred.float(), target.float(), dim=1)).mean()


def _trainable(model: nn.Module):
    return [p for p in model.parameters() if p.requires_grad]


@TRAINERS.register()
class FeatureTokenizerTrainer(BaseTrainer):
    """VQ-KD / Cluster. Config: ``model`` (``VQKD`` or ``ClusterTokenizer``), ``loss.codebook_weight``,
    ``optim.g_optimizer`` (ignored when the model has no trainable parameters)."""

    def build_model(self) -> nn.Module:
        require_teachers(self.cfg.model, train=True)   # before a ViT-B student is built
        return MODELS.build(self.cfg.model.to_dict())

    def _wrap_ddp(self, model: nn.Module, shardable: bool = True) -> nn.Module:
        return super()._wrap_ddp(model, shardable) if _trainable(model) else model  # DDP refuses gradient-free modules

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        params = _trainable(self.model)
        return {"g": build_optimizer(params, self.cfg.optim.g_optimizer)} if params else {}

    def train_step(self, batch, it: int) -> Dict[str, float]:
        with self.autocast():
            out = self.net(batch["image"])
        quant = out["quant"]
        weight = float(self.cfg.get("loss", {}).get("codebook_weight", 1.0))
        terms = {"rec": cosine_distance(out["features"], out["target"]), "quant": weight * quant.loss}
        self.check_finite(terms)
        if "g" in self.optimizers:
            self.optimize("g", sum(terms.values()), clip=self.cfg.optim.get("clip_max_norm"))
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update({k: float(v) for k, v in quant.stats.items()})
        return logs

    def validate(self, it: int) -> Dict[str, float]:
        """Cosine distance to the teacher and codebook usage over all tokens of the eval images."""
        size = self.model.quantize.codebook_size
        counts = torch.zeros(size)
        dists = []
        limit = min(int(self.cfg.get("eval_max_images") or len(self.eval_dataset)), len(self.eval_dataset))
        for i in range(limit):
            x = self.eval_dataset[i]["image"].unsqueeze(0).to(self.device)
            f = self.model.downsample_factor
            x = x[..., : x.shape[-2] // f * f, : x.shape[-1] // f * f]
            out = self.model(x)
            dists.append(cosine_distance(out["features"], out["target"]).item())
            counts += torch.bincount(out["quant"].indices.reshape(-1).cpu(), minlength=size).float()
        stats = usage_from_counts(counts)
        return {"cos_distance": sum(dists) / len(dists), **{k: float(v) for k, v in stats.items()}}


@TRAINERS.register()
class PixelDecoderTrainer(VQGANTrainer):
    """VQGAN losses on ``PixelDecoder`` (frozen tokenizer + trainable decoder); see the module doc."""

    def build_model(self) -> nn.Module:
        path = tokenizer_source(self.cfg)
        if not path:
            raise ValueError("PixelDecoderTrainer needs a trained tokenizer: set 'tokenizer_checkpoint' in the "
                             "config or pass --opt load_model_from=PATH (a checkpoint of scripts/train.py)")
        tok_cfg, state = read_tokenizer_checkpoint(path)
        if not self.cfg.model.get("tokenizer"):
            if not tok_cfg:
                raise ValueError(f"{path} holds no config; give the tokenizer's section as model.tokenizer")
            self.cfg.model.tokenizer = tok_cfg  # saved with the run: its checkpoints rebuild alone
        require_teachers(self.cfg.model, train=True)   # a frozen Cluster tokenizer encodes with its teacher
        model = super().build_model()
        strict = bool(self.cfg.get("tokenizer_strict", True))
        load_model_state(model.tokenizer, state, strict=strict, source=f"{path}:comp_model")
        if self.ema is not None:
            self.ema.model.tokenizer.load_state_dict(model.tokenizer.state_dict())
        log.info("frozen tokenizer %s loaded from %s", type(model.tokenizer).__name__, path)
        return model


@TRAINERS.register()
class OneDTokenizerTrainer(VQGANTrainer):
    """Stage 1 or 2 of ``OneDTokenizer`` training (the model's ``causal_decoder`` and
    ``freeze_encoder`` make the stage). Loss sections beyond :class:`VQGANTrainer`'s:
    ``loss.lpips`` (LPIPS, on while ``it < loss.lpips_until``; null = always) and
    ``loss.perceptual`` (:class:`~src.losses.ConvNeXtPerceptualLoss`). ``loss.perceptual_loss``
    is not used here. A stage-2 ``load_checkpoint`` takes every stage-1 weight whose shape fits
    and must find all of the frozen encoder and codebook."""

    def build_model(self) -> nn.Module:
        lcfg = self.cfg.loss
        if lcfg.get("perceptual_loss"):
            raise ValueError("OneDTokenizerTrainer: use loss.lpips and loss.perceptual, not loss.perceptual_loss")
        model = super().build_model()
        self.lpips = optional_loss(lcfg.get("lpips"), self.device)
        until = lcfg.get("lpips_until")
        self.lpips_until = None if until is None else int(until)
        self.feature_loss = optional_loss(lcfg.get("perceptual"), self.device)
        self.lpips_on = self.lpips is not None
        return model

    def train_step(self, batch, it: int) -> Dict[str, float]:
        self.lpips_on = self.lpips is not None and (self.lpips_until is None or it < self.lpips_until)
        return super().train_step(batch, it)

    def reconstruction_terms(self, x: torch.Tensor, x_hat: torch.Tensor) -> Dict[str, torch.Tensor]:
        """``rec`` (MSE or L1), ``lpips`` (while on) and ``perceptual`` (classifier logits)."""
        terms = super().reconstruction_terms(x, x_hat)
        if self.lpips_on:
            terms["lpips"] = self.lpips(x, x_hat)
        if self.feature_loss is not None:
            terms["perceptual"] = self.feature_loss(x, x_hat)
        return terms

    def eval_input(self, image: torch.Tensor) -> torch.Tensor:
        """Shorter side resized to the model's ``image_size`` (bicubic), centre crop: the fixed
        input size the token count is made for."""
        s = self.model.image_size
        x = image.unsqueeze(0).to(self.device)
        scale = s / min(x.shape[-2:])
        size = (max(s, round(x.shape[-2] * scale)), max(s, round(x.shape[-1] * scale)))
        if size != tuple(x.shape[-2:]):
            x = F.interpolate(x, size=size, mode="bicubic", align_corners=False, antialias=True).clamp(-1, 1)
        top, left = (size[0] - s) // 2, (size[1] - s) // 2
        return x[..., top:top + s, left:left + s]

    def _load_previous_step(self, spec: dict) -> None:
        if not self.model.frozen_encoder:
            return super()._load_previous_step(spec)
        path = self._previous_step_path(spec)  # stage 2 starts from a stage-1 run
        state = load_file(path, map_location="cpu")["comp_model"]
        own = sharding.module_state(self.model)
        fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
        frozen = {f"{prefix}.{k}" for prefix, part in (("encoder", self.model.encoder),
                                                      ("quantize", self.model.quantize))
                  for k in part.state_dict()}
        if frozen - fits.keys():
            raise RuntimeError(f"{path} does not hold the frozen stage-1 encoder/codebook of this model "
                               f"(missing or differently shaped: {sorted(frozen - fits.keys())[:6]}); "
                               f"check that both stages share the encoder and codebook sizes")
        sharding.load_module_state(self.model, fits, strict=False, source=str(path))
        if self.ema is not None:
            self.ema.model.load_state_dict(sharding.module_state(self.model))
        fresh = sorted(k for k in own if k not in fits)
        log.info("stage 2 from %s: %d tensors loaded, %d new (%s)", path, len(fits), len(fresh),
                 ", ".join(fresh[:6]) + (" ..." if len(fresh) > 6 else ""))


@TRAINERS.register()
class ARTrainer(BaseTrainer):
    """Next-token prediction of ``LlamaC2I`` on ``TokenDataset`` grids. Optional ``validation``
    section: ``tokenizer_checkpoint`` (a model with ``decode_indices``), ``fid_cache``,
    ``num_samples``, ``cfg_scale``, ``top_k``, ``top_p``, ``temperature``, ``seed``."""

    def build_model(self) -> nn.Module:
        return MODELS.build(self.cfg.model.to_dict())

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        return {"g": build_optimizer(self.model.parameters(), self.cfg.optim.g_optimizer)}

    def _build_loader(self):
        loader = super()._build_loader()
        loader.collate_fn = collate_tokens  # token batches, not images
        return loader

    def train_step(self, batch, it: int) -> Dict[str, float]:
        tokens, labels = batch["tokens"], batch["label"]
        with self.autocast():
            logits = self.net(tokens, labels)
        loss = F.cross_entropy(logits.float().flatten(0, 1), tokens.flatten())
        self.check_finite({"ce": loss})
        self.optimize("g", loss, clip=self.cfg.optim.get("clip_max_norm"))
        acc = (logits.detach().argmax(-1) == tokens).float().mean()
        return {"ce": loss.item(), "ppl": math.exp(min(loss.item(), 50.0)), "acc": acc.item()}

    def validate(self, it: int) -> Dict[str, float]:
        metrics = self._token_metrics() if self.eval_dataset is not None else {}
        return metrics | self._generation_metrics(it)

    def _token_metrics(self) -> Dict[str, float]:
        limit = min(int(self.cfg.get("eval_max_images") or len(self.eval_dataset)), len(self.eval_dataset))
        ce, acc = [], []
        for start in range(0, limit, 16):
            batch = collate_tokens([self.eval_dataset[i] for i in range(start, min(start + 16, limit))])
            tokens, labels = batch["tokens"].to(self.device), batch["label"].to(self.device)
            logits = self.model(tokens, labels)
            ce.append(F.cross_entropy(logits.flatten(0, 1), tokens.flatten()).item())
            acc.append((logits.argmax(-1) == tokens).float().mean().item())
        return {"val_ce": sum(ce) / len(ce), "val_acc": sum(acc) / len(acc)}

    def _generation_metrics(self, it: int) -> Dict[str, float]:
        """Guided samples decoded to images; FID against the cached reference statistics."""
        vcfg = self.cfg.get("validation") or {}
        if not vcfg.get("tokenizer_checkpoint"):
            return {}
        images = self.generate_images(vcfg)
        self.save_samples(it, {f"sample_{i}": img for i, img in enumerate(images[:4])})
        cache_path = vcfg.get("fid_cache")
        if not cache_path or not Path(cache_path).is_file():
            if cache_path:
                log.warning("FID cache %s not found (write it with scripts/fid_cache.py); no gFID", cache_path)
            return {}
        from src.metrics import InceptionFeatures, MetricUnavailable
        from src.zoo.ar.evaluation import fid_to_cache, load_fid_cache

        try:
            extractor = InceptionFeatures(self.device)
        except (MetricUnavailable, ImportError) as e:
            log.warning("no gFID: %s", e)
            return {}
        return {"gfid": fid_to_cache(extractor((images.clamp(-1, 1) + 1) / 2), load_fid_cache(cache_path))}

    def generate_images(self, vcfg: Mapping[str, Any]) -> torch.Tensor:
        """``num_samples`` images (classes in turn) from a fixed seed, in [-1, 1]."""
        if getattr(self, "_decoder", None) is None:
            from src.zoo.tools import load_tokenizer

            self._decoder = load_tokenizer(vcfg["tokenizer_checkpoint"], device=str(self.device))
        n = int(vcfg.get("num_samples", 8))
        labels = torch.arange(n, device=self.device) % self.model.num_classes
        gen = torch.Generator(device=self.device).manual_seed(int(vcfg.get("seed", 0)))
        tokens = sample(self.model, labels, cfg_scale=float(vcfg.get("cfg_scale", 4.0)),
                        temperature=float(vcfg.get("temperature", 1.0)), top_k=int(vcfg.get("top_k", 0)),
                        top_p=float(vcfg.get("top_p", 1.0)), generator=gen)
        return decode_tokens(self._decoder, tokens)


def decode_tokens(decoder: nn.Module, tokens: torch.Tensor, grid: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """(B, N) tokens -> images via ``decoder.decode_indices`` on a square grid (or ``grid``); a 1D
    tokenizer (one with ``num_tokens``) takes the sequence as it is."""
    if getattr(decoder, "num_tokens", None) is not None:
        with torch.no_grad():
            return decoder.decode_indices(tokens).float()
    side = math.isqrt(tokens.shape[1])
    h, w = grid or (side, side)
    if h * w != tokens.shape[1]:
        raise ValueError(f"{tokens.shape[1]} tokens do not fill a {h}x{w} grid; pass the grid")
    with torch.no_grad():
        return decoder.decode_indices(tokens.view(-1, h, w)).float()
