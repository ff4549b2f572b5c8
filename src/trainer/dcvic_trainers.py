"""DC-VIC training (Iwai et al. 2024, Sec. III-C): one trainer, composed from a :class:`Recipe`.

A recipe says three things: whether the betas condition the model (drawn per sample from the
model's :class:`~src.models.codec.betas.BetaSpace`), whether the rate trains (encoder and entropy
models with a rate term and the auxiliary quantile loss) or stays frozen, and which adversarial
game the decoder plays (none, PatchGAN or OASIS). The published steps are recipes, registered under
the reference's trainer names, so configs name them as before:

- ``RateDistortionVqCodeTrainer``: step 1-1; no betas, the rate trains, no GAN.
- ``DualBetaCondRateDistortionVqCodeTrainer``: step 1-2; betas per sample, the rate trains, no GAN.
- ``DualBetaCondGanDistortionVqCodeTrainer``: step 1-3 and stage 3; betas, the rate frozen, PatchGAN.
- ``DualBetaCondOASISGanDistortionVqCodeTrainer`` (and the reference's
  ``DualBetaCondOasisGanDistortionVqFusionTrainer``): step 1-3 with the OASIS discriminator.
- ``DCVICTrainer``: any other mix, from ``trainer.betas`` / ``trainer.rate`` / ``trainer.gan``.

Losses: MSE (+ LPIPS) always; the rate term x ``beta_weight(beta_rate)`` while the rate trains;
the VQ code terms x ``beta_weight(beta_vq)`` while the rate trains (beta_vq steers how much of y
carries the codes) and unweighted once it is frozen, as published; the adversarial term when
there is a GAN. With the rate frozen only the decoder, the VQ estimator and the fusion train.
Stage 3 is the PatchGAN recipe with ``model.use_selected_beta_pairs: true``: betas come from
the selected (beta_rate, beta_vq) pairs instead of the 101 x 101 grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from src.losses import OASISLoss, beta_weight, build_loss
from src.metrics.pixel import ms_ssim, psnr
from src.models.codec.image_coder import ImageCoder
from src.models.codec.loading import build_codec
from src.trainer.base_trainer import BaseTrainer
from src.trainer.optim import build_optimizer
from src.utils.registry import SUBNETS, TRAINERS

LOSS_NAMES = ("rate_loss", "distortion_loss", "perceptual_loss", "code_distortion_loss", "code_ce_loss",
              "gan_loss")
GANS = ("none", "patchgan", "oasis")


@dataclass(frozen=True)
class Recipe:
    """What one DC-VIC training step trains, and against what."""
    betas: bool = True        # (beta_rate, beta_vq) drawn per sample and fed to the model
    rate: bool = True         # the rate term trains encoder + entropy models; False: frozen, rates fixed
    gan: str = "none"         # none | patchgan | oasis

    # modules that train while the rate is frozen (the reference's step 1-3)
    FROZEN_RATE_TRAINS = ("decoder", "vq_estimator", "fusion_module")

    def __post_init__(self):
        if self.gan not in GANS:
            raise ValueError(f"trainer.gan must be one of {GANS}, got {self.gan!r}")

    @classmethod
    def from_config(cls, trainer_cfg) -> "Recipe":
        """The open form, ``trainer.type: DCVICTrainer`` with ``betas`` / ``rate`` / ``gan`` keys."""
        for key in ("betas", "rate"):
            if not isinstance(trainer_cfg.get(key, True), bool):
                raise ValueError(f"trainer.{key} must be true or false, got {trainer_cfg.get(key)!r}")
        return cls(betas=trainer_cfg.get("betas", True), rate=trainer_cfg.get("rate", True),
                   gan=str(trainer_cfg.get("gan", "none")))


# the published steps, under the reference's trainer names (configs name these)
RECIPES = {
    "RateDistortionVqCodeTrainer": Recipe(betas=False, rate=True, gan="none"),
    "DualBetaCondRateDistortionVqCodeTrainer": Recipe(betas=True, rate=True, gan="none"),
    "DualBetaCondGanDistortionVqCodeTrainer": Recipe(betas=True, rate=False, gan="patchgan"),
    "DualBetaCondOASISGanDistortionVqCodeTrainer": Recipe(betas=True, rate=False, gan="oasis"),
    "DualBetaCondOasisGanDistortionVqFusionTrainer": Recipe(betas=True, rate=False, gan="oasis"),
}


def discriminator_config(disc_cfg: dict, space) -> dict:
    """The discriminator's section with the codec's beta maxima filled in (a section that names
    its own must agree with the codec's)."""
    disc_cfg = dict(disc_cfg)
    for key, value in zip(("max_beta_1", "max_beta_2"), space.maxima):
        if disc_cfg.get(key) is None:
            disc_cfg[key] = value
        elif float(disc_cfg[key]) != value:
            raise ValueError(f"discriminator.{key} = {disc_cfg[key]} but the codec's beta range ends at {value}")
    return disc_cfg


class DCVICTrainer(BaseTrainer):
    """Every DC-VIC training step; ``recipe`` (or the config's ``trainer`` keys) says which."""

    def __init__(self, cfg, recipe: Optional[Recipe] = None, **kwargs):
        self.recipe = recipe or Recipe.from_config(cfg.get("trainer", {}))
        tcfg = cfg.get("trainer", {})
        policy = tcfg.get("beta_policy", "exp")
        if policy not in ("exp", "linear"):
            raise ValueError(f"trainer.beta_policy must be exp or linear, got {policy!r}")
        self.beta_policy, self.beta_offset = policy, float(tcfg.get("beta_offset", 1.0))
        self.per_sample_betas = bool(tcfg.get("sample_beta_batch", True))
        self.use_selected_pairs = bool(cfg.model.get("use_selected_beta_pairs"))
        self.clip_max_norm = cfg.optim.get("clip_max_norm")
        self.discriminator: Optional[nn.Module] = None
        super().__init__(cfg, **kwargs)

    # ------------------------------------------------------------------ build
    def build_model(self) -> nn.Module:
        losses = {name: build_loss(self.cfg.loss[name]) for name in LOSS_NAMES if self.cfg.loss.get(name)}
        self.losses = nn.ModuleDict(losses).to(self.device)
        self._check_losses()
        model = build_codec(self.cfg)
        if not self.recipe.rate:
            model.requires_grad_(False)
            for name in Recipe.FROZEN_RATE_TRAINS:
                getattr(model, name).requires_grad_(True)
        if self.recipe.gan != "none":
            self.discriminator = SUBNETS.build(discriminator_config(self.cfg.discriminator.to_dict(),
                                                                    model.beta_space)).to(self.device)
            self.disc_net = self._wrap_ddp(self.discriminator)
        return model

    def _check_losses(self) -> None:
        needed = ["distortion_loss", "code_distortion_loss", "code_ce_loss"]
        needed += ["rate_loss"] if self.recipe.rate else []
        needed += ["gan_loss"] if self.recipe.gan != "none" else []
        missing = [name for name in needed if name not in self.losses]
        if missing:
            raise ValueError(f"this DC-VIC step ({self.recipe}) needs loss.{', loss.'.join(missing)}")
        if self.recipe.gan != "none" and (self.recipe.gan == "oasis") != isinstance(self.losses["gan_loss"],
                                                                                       OASISLoss):
            raise ValueError(f"the {self.recipe.gan} recipe needs loss.gan_loss.type "
                             f"{'OASISLoss' if self.recipe.gan == 'oasis' else 'of a two-class GAN loss'}, "
                             f"got {type(self.losses['gan_loss']).__name__}")

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        self.g_params = [p for _, p in self.model.trainable_parameters()]
        optimizers = {"g": build_optimizer(self.g_params, self.cfg.optim.g_optimizer)}
        if self.recipe.rate:
            aux = [p for _, p in self.model.aux_parameters()]
            optimizers["aux"] = build_optimizer(aux, self.cfg.optim.aux_optimizer)
        if self.discriminator is not None:
            optimizers["d"] = build_optimizer(self.discriminator.parameters(), self.cfg.optim.d_optimizer)
        return optimizers

    def checkpoint_modules(self) -> Dict[str, nn.Module]:
        modules = {"comp_model": self.model}
        if self.discriminator is not None:
            modules["discriminator"] = self.discriminator
        return modules

    # ------------------------------------------------------------------ step
    def sample_betas(self, n: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """A (beta_rate, beta_vq) pair per sample (or per batch, ``trainer.sample_beta_batch: false``)
        from the model's grid ``i / n * max``, ``i = 0..model.num_beta_levels`` (101 values by
        default), or from its selected pairs; ``(None, None)`` when the recipe has no betas."""
        if not self.recipe.betas:
            return None, None
        return self.model.beta_space.sample(n, self.per_sample_betas, self.device,
                                            use_selected=self.use_selected_pairs)

    def train_step(self, batch, it: int) -> Dict[str, float]:
        x = batch["image"]
        beta_rate, beta_vq = self.sample_betas(x.shape[0])
        with self.autocast():
            out = self.net(x, beta_rate, beta_vq, fix_entropy_models=not self.recipe.rate)
        x_hat = out["x_hat"]

        # G: rate, image and VQ code terms, and the adversarial term against a frozen D
        terms = self.rate_terms(out, beta_rate) if self.recipe.rate else {}
        terms |= self.image_terms(x, x_hat) | self.code_terms(out, beta_vq if self.recipe.rate else None)
        if self.discriminator is not None:
            self.discriminator.requires_grad_(False)
            with self.autocast():
                terms["adv"] = self.adversarial(self.discriminator(x_hat, beta_rate, beta_vq), out["vq_indices"],
                                                is_real=True, is_disc=False)
        self.check_finite(terms)
        self.optimize("g", sum(terms.values()), self.g_params, self.clip_max_norm)
        logs = self.scalars(terms, out)

        if self.recipe.rate:     # the bottleneck's quantiles
            aux = self.model.aux_loss()
            self.check_finite({"aux": aux})
            self.optimize("aux", aux)
            logs["aux"] = aux.item()
        if self.discriminator is not None:
            logs |= self.discriminator_step(x, x_hat.detach(), beta_rate, beta_vq, out["vq_indices"])
        return logs

    def discriminator_step(self, x: Tensor, x_hat: Tensor, beta_rate, beta_vq, vq_indices) -> Dict[str, float]:
        """Real and fake in one pass; D loss 0.5 * (real + fake)."""
        self.discriminator.requires_grad_(True)
        n = x.shape[0]
        with self.autocast():
            d_out = self.disc_net(torch.cat([x, x_hat]), beta_rate.repeat(2), beta_vq.repeat(2))
        d_real = 0.5 * self.adversarial(d_out[:n], vq_indices, is_real=True, is_disc=True)
        d_fake = 0.5 * self.adversarial(d_out[n:], vq_indices, is_real=False, is_disc=True)
        self.check_finite({"d_real": d_real, "d_fake": d_fake})
        self.optimize("d", d_real + d_fake)
        return {"d_real": d_real.item(), "d_fake": d_fake.item()}

    # -------------------------------------------------------------- loss terms
    def beta_weights(self, beta: Optional[Tensor]) -> Optional[Tensor]:
        """Per-sample weight of a beta-scaled term, :func:`src.losses.beta_weight` with
        ``trainer.beta_policy`` (``exp``: e^beta; ``linear``: beta + ``trainer.beta_offset``, 1 by
        default); the loss's own ``loss_weight`` is the scale."""
        if beta is None:
            return None
        return beta_weight(beta, policy=self.beta_policy, offset=self.beta_offset)

    def rate_terms(self, out, beta_rate) -> Dict[str, Tensor]:
        return {"rate": self.losses["rate_loss"](out["bpp"], sample_weight=self.beta_weights(beta_rate)).mean()}

    def image_terms(self, x: Tensor, x_hat: Tensor) -> Dict[str, Tensor]:
        terms = {"distortion": self.losses["distortion_loss"](x, x_hat).mean()}
        if "perceptual_loss" in self.losses:
            terms["perceptual"] = self.losses["perceptual_loss"](x, x_hat).mean()
        return terms

    def code_terms(self, out, beta_vq) -> Dict[str, Tensor]:
        w = self.beta_weights(beta_vq)
        return {"code_distortion": self.losses["code_distortion_loss"](out["vq_latent"], out["vq_latent_hat"],
                                                                         sample_weight=w).mean(),
                "code_ce": self.losses["code_ce_loss"](out["vq_logits"], out["vq_indices"], sample_weight=w).mean()}

    def adversarial(self, logits: Tensor, vq_indices: Tensor, is_real: bool, is_disc: bool) -> Tensor:
        loss = self.losses["gan_loss"]
        if self.recipe.gan == "oasis":     # per-pixel: the VQ class of real pixels, class 0 for fakes
            return loss(logits.float(), vq_indices, is_real=is_real, is_disc=is_disc).mean()
        return loss(logits.float(), is_real=is_real, is_disc=is_disc).mean()

    @staticmethod
    def scalars(terms: Dict[str, Tensor], out) -> Dict[str, float]:
        logs = {k: v.item() for k, v in terms.items()}
        logs["bpp"] = out["bpp"].mean().item()
        logs["vq_acc"] = (out["vq_logits"].argmax(1) == out["vq_indices"]).float().mean().item()
        return logs

    def before_save(self) -> None:
        """The entropy coder's tables are saved with the weights they were built from, so that
        every receiver codes with these tables instead of rebuilding its own."""
        with torch.no_grad():
            self.model.update(force=True)

    # -------------------------------------------------------------- validation
    def validation_points(self):
        if not self.recipe.betas:
            return [(None, None, "")]
        return self.model.beta_space.validation_points(self.use_selected_pairs)

    def validate(self, it: int) -> Dict[str, float]:
        """Real bpp (framed files), PSNR and MS-SSIM on the evaluation images at each validation point."""
        coder = ImageCoder(self.model, device=str(self.device), rebuild_tables=True)
        limit = int(self.cfg.get("eval_max_images") or len(self.eval_dataset))
        metrics: Dict[str, float] = {}
        for beta_rate, beta_vq, label in self.validation_points():
            rows, samples = [], {}
            for i in range(min(limit, len(self.eval_dataset))):
                item = self.eval_dataset[i]
                x = item["image"].unsqueeze(0)
                enc = coder.encode(x, beta_rate, beta_vq)
                x_hat, _ = coder.decode(enc.data)
                ref, rec = (x + 1) / 2, (x_hat + 1) / 2
                row = {"bpp": enc.real_bpp, "psnr": psnr(ref, rec).item()}
                if min(x.shape[2:]) > 160:
                    row["ms_ssim"] = ms_ssim(ref, rec).item()
                rows.append(row)
                if i < 2:
                    samples[f"{item['name']}{label}"] = x_hat[0]
            self.save_samples(it, samples)
            for key in rows[0]:
                values = [r[key] for r in rows if key in r]
                metrics[f"{label.strip('_')}_{key}".lstrip("_")] = sum(values) / len(values)
        return metrics


TRAINERS.register()(DCVICTrainer)
for _name, _recipe in RECIPES.items():
    TRAINERS.register(_name)(partial(DCVICTrainer, recipe=_recipe))
