"""DC-VIC training steps (Iwai et al. 2024, Sec. III-C).

=======  ============================================  =================================================
step     trainer                                       what trains / losses
=======  ============================================  =================================================
1-1      ``RateDistortionVqCodeTrainer``               all but the VQGAN; rate + MSE + LPIPS + VQ codes
1-2      ``DualBetaCondRateDistortionVqCodeTrainer``   same, betas drawn per sample; rate x 0.5 e^beta_rate,
                                                       VQ terms x e^beta_vq
1-3, 3   ``DualBetaCondGanDistortionVqCodeTrainer``    decoder, VQ estimator, fusion; MSE + LPIPS + GAN +
                                                       VQ codes; PatchGAN on image + 8 learned beta channels
1-3 alt  ``DualBetaCondOASISGanDistortionVqCodeTrainer``  the same with the OASIS variant (257 logits per VQ position)
=======  ============================================  =================================================

Stage 3 is step 1-3's trainer with ``model.use_selected_beta_pairs: true``: betas are drawn
from the selected (beta_rate, beta_vq) pairs instead of the 101 x 101 grid (num_beta_levels 100).
"""
from __future__ import annotations

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


class RateDistortionVqCodeTrainer(BaseTrainer):
    """Step 1-1: rate-distortion training with VQ code losses, no beta conditioning."""

    def build_model(self) -> nn.Module:
        losses = {name: build_loss(self.cfg.loss[name]) for name in LOSS_NAMES if self.cfg.loss.get(name)}
        self.losses = nn.ModuleDict(losses).to(self.device)
        return build_codec(self.cfg)

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        self.g_params = [p for _, p in self.model.trainable_parameters()]
        aux = [p for _, p in self.model.aux_parameters()]
        return {"g": build_optimizer(self.g_params, self.cfg.optim.g_optimizer),
                "aux": build_optimizer(aux, self.cfg.optim.aux_optimizer)}

    def sample_betas(self, n: int) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        return None, None

    def train_step(self, batch, it: int) -> Dict[str, float]:
        x = batch["image"]
        beta_rate, beta_vq = self.sample_betas(x.shape[0])
        with self.autocast():
            out = self.net(x, beta_rate, beta_vq)
        terms = self.rate_terms(out, beta_rate) | self.image_terms(x, out["x_hat"]) | \
            self.code_terms(out, beta_vq)
        self.check_finite(terms)
        self.optimize("g", sum(terms.values()), self.g_params, self.cfg.optim.get("clip_max_norm"))
        aux = self.model.aux_loss()
        self.check_finite({"aux": aux})
        self.optimize("aux", aux)
        return self.scalars(terms, out) | {"aux": aux.item()}

    # -------------------------------------------------------------- loss terms
    def beta_weights(self, beta: Optional[Tensor]) -> Optional[Tensor]:
        """Per-sample weight of a beta-scaled term, :func:`src.losses.beta_weight` with
        ``trainer.beta_policy`` (``exp``: e^beta; ``linear``: beta + ``trainer.beta_offset``, 1 by
        default); the loss's own ``loss_weight`` is the scale."""
        if beta is None:
            return None
        policy = self.cfg.trainer.get("beta_policy", "exp")
        if policy not in ("exp", "linear"):
            raise ValueError(f"trainer.beta_policy must be exp or linear, got {policy!r}")
        return beta_weight(beta, policy=policy, offset=float(self.cfg.trainer.get("beta_offset", 1.0)))

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
        return [(None, None, "")]

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


TRAINERS.register()(RateDistortionVqCodeTrainer)


@TRAINERS.register()
class DualBetaCondRateDistortionVqCodeTrainer(RateDistortionVqCodeTrainer):
    """Step 1-2: betas drawn per sample (``trainer.sample_beta_batch``) from the model's
    :class:`~src.models.codec.betas.BetaSpace`: its grid ``i / n * max``, ``i = 0..n``,
    ``n = model.num_beta_levels`` (default 100, so 101 values, as the reference's
    ``_sample_beta``); or, with ``model.use_selected_beta_pairs``, its selected pairs."""

    def sample_betas(self, n: int) -> Tuple[Tensor, Tensor]:
        per_sample = bool(self.cfg.trainer.get("sample_beta_batch", True))
        return self.model.beta_space.sample(n, per_sample, self.device,
                                            use_selected=bool(self.cfg.model.get("use_selected_beta_pairs")))

    def validation_points(self):
        return self.model.beta_space.validation_points(bool(self.cfg.model.get("use_selected_beta_pairs")))


@TRAINERS.register()
class DualBetaCondGanDistortionVqCodeTrainer(DualBetaCondRateDistortionVqCodeTrainer):
    """Step 1-3 and stage 3: the encoder and entropy models are frozen (rates stay fixed); the
    decoder, VQ estimator and fusion train against a beta-conditioned discriminator."""

    TRAINED = ("decoder", "vq_estimator", "fusion_module")

    def build_model(self) -> nn.Module:
        model = super().build_model()
        model.requires_grad_(False)
        for name in self.TRAINED:
            getattr(model, name).requires_grad_(True)
        self.discriminator = SUBNETS.build(discriminator_config(self.cfg.discriminator.to_dict(),
                                                                model.beta_space)).to(self.device)
        self.disc_net = self._wrap_ddp(self.discriminator)
        return model

    def build_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        self.g_params = [p for _, p in self.model.trainable_parameters()]
        return {"g": build_optimizer(self.g_params, self.cfg.optim.g_optimizer),
                "d": build_optimizer(self.discriminator.parameters(), self.cfg.optim.d_optimizer)}

    def checkpoint_modules(self) -> Dict[str, nn.Module]:
        return {"comp_model": self.model, "discriminator": self.discriminator}

    def train_step(self, batch, it: int) -> Dict[str, float]:
        x = batch["image"]
        beta_rate, beta_vq = self.sample_betas(x.shape[0])
        with self.autocast():
            out = self.net(x, beta_rate, beta_vq, fix_entropy_models=True)
        x_hat = out["x_hat"]

        # G: image, adversarial and VQ code terms (D frozen for this pass)
        self.discriminator.requires_grad_(False)
        terms = self.image_terms(x, x_hat) | self.code_terms(out, None)
        with self.autocast():
            terms["adv"] = self.adversarial(self.discriminator(x_hat, beta_rate, beta_vq), out["vq_indices"],
                                            is_real=True, is_disc=False)
        self.check_finite(terms)
        self.optimize("g", sum(terms.values()), self.g_params, self.cfg.optim.get("clip_max_norm"))

        # D: real and detached fake in one pass, loss 0.5 * (real + fake)
        self.discriminator.requires_grad_(True)
        n = x.shape[0]
        with self.autocast():
            d_out = self.disc_net(torch.cat([x, x_hat.detach()]), beta_rate.repeat(2), beta_vq.repeat(2))
        d_real = 0.5 * self.adversarial(d_out[:n], out["vq_indices"], is_real=True, is_disc=True)
        d_fake = 0.5 * self.adversarial(d_out[n:], out["vq_indices"], is_real=False, is_disc=True)
        self.check_finite({"d_real": d_real, "d_fake": d_fake})
        self.optimize("d", d_real + d_fake)
        return self.scalars(terms, out) | {"d_real": d_real.item(), "d_fake": d_fake.item()}

    def adversarial(self, logits: Tensor, vq_indices: Tensor, is_real: bool, is_disc: bool) -> Tensor:
        loss = self.losses["gan_loss"]
        if isinstance(loss, OASISLoss):
            return loss(logits.float(), vq_indices, is_real=is_real, is_disc=is_disc).mean()
        return loss(logits.float(), is_real=is_real, is_disc=is_disc).mean()


@TRAINERS.register("DualBetaCondOasisGanDistortionVqFusionTrainer")  # the reference's name
@TRAINERS.register()
class DualBetaCondOASISGanDistortionVqCodeTrainer(DualBetaCondGanDistortionVqCodeTrainer):
    """Step 1-3 with an OASIS discriminator: per-pixel 256 VQ classes + 1 fake class."""

    def build_model(self) -> nn.Module:
        model = super().build_model()
        if not isinstance(self.losses["gan_loss"], OASISLoss):
            raise ValueError("the OASIS trainer needs loss.gan_loss.type: OASISLoss")
        return model
