"""VQGAN training (the DC-VIC prior, and its quantizer variants VQ, CVQ-VAE, FSQ, LFQ) in one trainer.

The losses of taming-transformers' ``VQLPIPSWithDiscriminator`` (Esser et al., CVPR 2021), with
the training logic outside the model::

    G:  nll  = rec_weight * |x - x_hat|_1 (or MSE) + LPIPS(x, x_hat)
        loss = nll + codebook_weight * quantizer loss
                   + [it >= disc_start] * w * disc_factor * (-mean D(x_hat))
        w    = gain * clamp(|grad_W nll| / (|grad_W g| + 1e-4), 0, 1e4),  W = decoder.conv_out.weight
    D:  [it >= disc_start] * disc_factor * 0.5 * (relu(1 - D(x)) + relu(1 + D(sg(x_hat))))  (hinge)

With ``trainer.alternate_gd`` the GAN phase alternates: D steps at ``disc_start`` and every second
iteration after it, G on the others (AliTok's 1D tokenizer); each schedule counts its optimizer's
own steps.

``loss.gan_gain`` is taming's ``disc_weight`` (0.8 for the ImageNet f16 models, 0.75 for
latent-diffusion's f8 models and the seed's "aglwg075"). Without ``loss.adaptive_weight`` the GAN
weight is ``gain`` alone. The quantizer is chosen by the model's ``quantizer`` option, so this one
trainer covers VQGAN, CVQ-VAE, FSQ and LFQ; each quantizer's own loss is ``QuantizerOutput.loss``.

With ``trainer.alternate_crop: {size: S, batch: N}`` every second iteration trains on N random S px
crops cut out of the batch instead of the batch itself (the toy prior of the quickstart: its narrow
GroupNorm layers normalise each channel over the whole input, so a network that only ever sees one
input size decodes other sizes badly; alternating small crops and large ones keeps it good at both).

With ``trainer.ema_decay`` an exponential moving average of the generator weights is kept, saved
as ``ema_model`` (same keys as ``comp_model``) and used for validation. Validation adds LPIPS
(AlexNet) and rFID over the evaluation images when their ImageNet weights are here
(``eval_learned_metrics: false`` turns them off). The generator's learning-rate
schedule counts iterations from 0, the discriminator's from ``disc_start`` (its warm-up and
milestones are relative to the iteration D starts).
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Dict, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from src.losses import adaptive_gan_weight, build_loss
from src.metrics.pixel import psnr, ssim
from src.models.vq.quantizers import usage_from_counts
from src.models.vq.vqgan import reconstruct
from src.trainer import sharding
from src.trainer.base_trainer import BaseTrainer
from src.trainer.optim import build_optimizer
from src.utils.registry import MODELS, SUBNETS, TRAINERS

log = logging.getLogger(__name__)

REC_LOSSES = ("l1", "mse")


class ModelEMA:
    """Exponential moving average of a model's weights (a frozen copy in eval mode).

    ``update``: ``ema = decay * ema + (1 - decay) * param`` for floating-point parameters and
    buffers; other buffers (counters, flags) are copied. Under FSDP each rank keeps the whole EMA
    copy and gathers the sharded weights for the update.
    """

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {decay}")
        self.decay = float(decay)
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_state = self.model.state_dict()
        for name, value in model.state_dict().items():
            value = sharding.full_value(value)
            target = ema_state[name]
            if target.is_floating_point():
                target.mul_(self.decay).add_(value.detach().to(target.dtype), alpha=1.0 - self.decay)
            else:
                target.copy_(value)


def optional_loss(section, device) -> Optional[nn.Module]:
    """A loss from a config section, or None when the section is null or its ``loss_weight`` is 0."""
    if not section or float(section.get("loss_weight", 1.0)) <= 0:
        return None
    if section.get("pnet_rand") or section.get("pretrained") is False:
        log.warning("%s has a RANDOM backbone: its term is meaningless (quickstart/tests only)", section["type"])
    return build_loss(section.to_dict()).to(device)


@TRAINERS.register()
class VQGANTrainer(BaseTrainer):
    """VQGAN-style tokenizer training: reconstruction + LPIPS + quantizer loss + PatchGAN (hinge).

    Config: ``model`` (a ``VQGAN`` section), ``discriminator`` (``PatchGANDiscriminator``),
    ``loss`` (``rec_loss``, ``rec_weight``, ``perceptual_loss``, ``codebook_weight``, ``gan_loss``,
    ``gan_gain``, ``adaptive_weight``, ``disc_factor``), ``trainer`` (``disc_start``,
    ``ema_decay``), ``optim`` (``g_optimizer``, ``d_optimizer``, their schedulers, ``clip_max_norm``,
    ``d_clip_max_norm``).
    """

    # ------------------------------------------------------------------ building
    def build_model(self) -> nn.Module:
        lcfg = self.cfg.loss
        self.rec_loss = lcfg.get("rec_loss", "l1")
        if self.rec_loss not in REC_LOSSES:
            raise ValueError(f"loss.rec_loss must be one of {REC_LOSSES}, got {self.rec_loss!r}")
        self.rec_weight = float(lcfg.get("rec_weight", 1.0))
        self.codebook_weight = float(lcfg.get("codebook_weight", 1.0))
        self.gan_gain = float(lcfg.get("gan_gain", 0.8))
        self.disc_factor = float(lcfg.get("disc_factor", 1.0))
        self.use_adaptive = bool(lcfg.get("adaptive_weight", True))
        self.perceptual = optional_loss(lcfg.get("perceptual_loss"), self.device)
        self.gan_loss = build_loss(dict(lcfg.get("gan_loss") or {"type": "HingeGANLoss"}))
        self.disc_start = int(self.cfg.trainer.get("disc_start", 0))
        self.alternate = bool(self.cfg.trainer.get("alternate_gd", False))
        self.alternate_crop = self._alternate_crop_setting(self.cfg.trainer.get("alternate_crop"))

        import src.models  # noqa: F401  (fills MODELS / SUBNETS)

        model = MODELS.build(self.cfg.model.to_dict()).to(self.device)
        self.discriminator = SUBNETS.build(self.cfg.discriminator.to_dict()).to(self.device)
        # D stays under DDP with parallel: fsdp: ActNorm initialises its parameters in place from the
        # first batch, which a sharded module would write to a gathered copy and lose; D is small
        self.disc_net = self._wrap_ddp(self.discriminator, shardable=False)
        decay = self.cfg.trainer.get("ema_decay")
        self.ema: Optional[ModelEMA] = ModelEMA(model, decay) if decay else None
        return model

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        self.g_params = [p for p in self.model.parameters() if p.requires_grad]
        return {"g": build_optimizer(self.g_params, self.cfg.optim.g_optimizer),
                "d": build_optimizer(self.discriminator.parameters(), self.cfg.optim.d_optimizer)}

    def _load_previous_step(self, spec: dict) -> None:
        """``load_checkpoint`` (fine-tuning): the EMA starts from the loaded weights."""
        super()._load_previous_step(spec)
        if self.ema is not None:
            self.ema.model.load_state_dict(sharding.module_state(self.model))

    def schedule_steps(self, name: str, it: int) -> Optional[bool]:
        """Each schedule advances with its optimizer's steps: G's from iteration 0, D's from
        ``disc_start`` (with ``alternate_gd``, on their own iterations only)."""
        return self.d_turn(it) if name == "d" else self.g_turn(it)

    def g_turn(self, it: int) -> bool:
        """Whether G steps in iteration ``it``: always, or with ``trainer.alternate_gd`` once the GAN
        is on, every other iteration (D first at ``disc_start``, then G, D, ...)."""
        return not (self.alternate and it >= self.disc_start) or (it - self.disc_start) % 2 == 1

    def d_turn(self, it: int) -> bool:
        """Whether D steps in iteration ``it`` (from ``disc_start``; every other one with alternation)."""
        return it >= self.disc_start and (not self.alternate or (it - self.disc_start) % 2 == 0)

    def checkpoint_modules(self) -> Dict[str, nn.Module]:
        modules = {"comp_model": self.model, "discriminator": self.discriminator}
        if self.ema is not None:
            modules["ema_model"] = self.ema.model
        return modules

    # ------------------------------------------------------------------ training
    @staticmethod
    def _alternate_crop_setting(spec) -> Optional[tuple]:
        if not spec:
            return None
        if not isinstance(spec, dict) or set(spec) != {"size", "batch"} or \
                not all(isinstance(spec[k], int) and spec[k] > 0 for k in spec):
            raise ValueError(f"trainer.alternate_crop must be {{size: S, batch: N}} with positive integers, got {spec!r}")
        return int(spec["size"]), int(spec["batch"])

    def crops_of(self, x: Tensor, it: int) -> Tensor:
        """``trainer.alternate_crop``'s N random S px crops of the images of ``x``, drawn from a
        generator seeded by the run's seed and ``it`` (a resumed run cuts the same crops)."""
        size, n = self.alternate_crop
        if min(x.shape[2:]) < size:
            raise ValueError(f"trainer.alternate_crop.size {size} is larger than the training crops {tuple(x.shape[2:])}")
        g = torch.Generator().manual_seed(int(self.cfg.get("seed", 0)) * 1_000_003 + it)
        img = torch.randint(x.shape[0], (n,), generator=g).tolist()
        top = torch.randint(x.shape[2] - size + 1, (n,), generator=g).tolist()
        left = torch.randint(x.shape[3] - size + 1, (n,), generator=g).tolist()
        return torch.stack([x[i, :, t:t + size, l:l + size] for i, t, l in zip(img, top, left)])

    def train_step(self, batch, it: int) -> Dict[str, float]:
        x = batch["image"]
        if self.alternate_crop and it % 2 == 1:
            x = self.crops_of(x, it)
        gan_on = it >= self.disc_start
        g_turn, d_turn = self.g_turn(it), self.d_turn(it)
        with (contextlib.nullcontext() if g_turn else torch.no_grad()), self.autocast():
            out = self.net(x)                      # a D-only iteration needs the fakes, not their gradients
        x_hat, quant = out["x_hat"].float(), out["quant"]

        # G: reconstruction, perceptual, quantizer and (after disc_start) adaptive-weighted GAN terms
        with (contextlib.nullcontext() if g_turn else torch.no_grad()):
            terms = self.reconstruction_terms(x, x_hat)
        nll = sum(terms.values())
        terms["quant"] = self.codebook_weight * quant.loss
        logs: Dict[str, float] = {}
        if gan_on and g_turn:
            self.discriminator.requires_grad_(False)
            with self.autocast():
                g_adv = self.gan_loss(self.discriminator(x_hat).float(), is_real=True, is_disc=False)
            weight = self.gan_weight(nll, g_adv)
            terms["gan"] = weight * self.disc_factor * g_adv
            logs.update(g_adv=g_adv.item(), gan_weight=weight.item())
        self.check_finite(terms)
        if g_turn:
            stepped = self.optimize("g", sum(terms.values()), self.g_params, self.cfg.optim.get("clip_max_norm"))
            if self.ema is not None and stepped:
                self.ema.update(self.model)

        # D: real and detached fake in one pass (no batch statistics with ActNorm), hinge loss
        if d_turn:
            self.discriminator.requires_grad_(True)
            n = x.shape[0]
            with self.autocast():
                logits = self.disc_net(torch.cat([x, x_hat.detach()])).float()
            d_real = 0.5 * self.gan_loss(logits[:n], is_real=True, is_disc=True)
            d_fake = 0.5 * self.gan_loss(logits[n:], is_real=False, is_disc=True)
            self.check_finite({"d_real": d_real, "d_fake": d_fake})
            self.optimize("d", self.disc_factor * (d_real + d_fake), clip=self.cfg.optim.get("d_clip_max_norm"))
            logs.update(d_real=d_real.item(), d_fake=d_fake.item(), logits_real=logits[:n].mean().item(),
                        logits_fake=logits[n:].mean().item())
        return self.step_scalars(terms, quant, x, x_hat) | logs

    def reconstruction_terms(self, x: Tensor, x_hat: Tensor) -> Dict[str, Tensor]:
        """``rec`` (L1 or MSE on [-1, 1] images, times ``rec_weight``) and ``perceptual`` (LPIPS)."""
        rec = F.l1_loss(x_hat, x) if self.rec_loss == "l1" else F.mse_loss(x_hat, x)
        terms = {"rec": self.rec_weight * rec}
        if self.perceptual is not None:
            terms["perceptual"] = self.perceptual(x, x_hat)
        return terms

    def gan_weight(self, nll: Tensor, g_adv: Tensor) -> Tensor:
        """Adaptive weight at the decoder's last layer times the gain (or the gain alone)."""
        if not self.use_adaptive:
            return torch.tensor(self.gan_gain, device=g_adv.device)
        return adaptive_gan_weight(nll, g_adv, self.model.get_last_layer(), gain=self.gan_gain)

    @staticmethod
    def step_scalars(terms: Dict[str, Tensor], quant, x: Tensor, x_hat: Tensor) -> Dict[str, float]:
        """Loss terms, the quantizer's own terms and codebook statistics of this batch, PSNR."""
        logs = {k: float(v.detach()) for k, v in terms.items()}
        logs.update({f"q_{k}": float(v.detach()) for k, v in quant.losses.items()})
        logs.update({k: float(v) for k, v in quant.stats.items()})
        logs["psnr"] = psnr((x.detach() + 1) / 2, (x_hat.detach().clamp(-1, 1) + 1) / 2).mean().item()
        return logs

    # ---------------------------------------------------------------- validation
    def eval_input(self, image: Tensor) -> Tensor:
        """An evaluation image (3, H, W) as the model takes it: as is (a VQGAN codes any size)."""
        return image.unsqueeze(0).to(self.device)

    def learned_metrics(self):
        """(LPIPS, Inception features) for validation, each None when its ImageNet weights cannot be
        loaded here (said once in the log) or when ``eval_learned_metrics`` is false; built once."""
        if getattr(self, "_learned_metrics", None) is None:
            from src.metrics import InceptionFeatures, LPIPSMetric
            from src.metrics.weights import OptionalMetric

            on = bool(self.cfg.get("eval_learned_metrics", True))
            skipped: Dict[str, str] = {}
            lp = OptionalMetric("lpips", on, lambda: LPIPSMetric(self.device), skipped).fn
            inception = OptionalMetric("rfid", on, lambda: InceptionFeatures(self.device), skipped).fn
            for name, why in skipped.items():
                if on:
                    log.warning("validation without %s: %s", name, why)
            self._learned_metrics = (lp, inception)
        return self._learned_metrics

    def validate(self, it: int) -> Dict[str, float]:
        """PSNR / SSIM (and LPIPS, rFID when their weights are here) on the evaluation images,
        codebook usage, perplexity and entropy over all their tokens, and input | reconstruction
        samples (the EMA model when enabled)."""
        model = self.ema.model if self.ema is not None else self.model
        lp, inception = self.learned_metrics()
        size = model.quantize.codebook_size
        counts = torch.zeros(size, dtype=torch.long)
        limit = min(int(self.cfg.get("eval_max_images") or len(self.eval_dataset)), len(self.eval_dataset))
        psnrs, ssims, lpips, real, fake, samples = [], [], [], [], [], {}
        for i in range(limit):
            item = self.eval_dataset[i]
            x = self.eval_input(item["image"])
            x_hat, indices = reconstruct(model, x)
            ref, rec = (x + 1) / 2, (x_hat.clamp(-1, 1) + 1) / 2
            psnrs.append(psnr(ref, rec).item())
            ssims.append(ssim(ref, rec).item())
            if lp is not None:
                lpips.append(lp(ref, rec).item())
            if inception is not None:
                real.append(inception(ref))
                fake.append(inception(rec))
            counts += torch.bincount(indices.reshape(-1).cpu(), minlength=size)
            if i < 2:
                samples[item["name"]] = torch.cat([x[0], x_hat[0].clamp(-1, 1)], dim=-1)
        self.save_samples(it, samples)
        stats = usage_from_counts(counts)
        metrics = {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims),
                   **{k: float(v) for k, v in stats.items()}}
        if lpips:
            metrics["lpips"] = sum(lpips) / len(lpips)
        if len(real) >= 2:
            from src.metrics import fid_from_features

            metrics["rfid"] = fid_from_features(np.concatenate(real), np.concatenate(fake))
        return metrics
