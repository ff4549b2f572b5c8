"""DC-VIC: dual-conditioned VQGAN-based image compression.

Iwai, Miyazaki & Omachi, "Dual-Conditioned VQGAN-based Image Compression", IEEE Access 2024.
A learned codec (ELIC transforms, Minnen 2020 hyperprior + ChARM) whose decoder predicts the
indices of a frozen VQGAN f8 and fuses its own features into the VQGAN decoder::

    x [-1,1] --VQGAN.encode (frozen)--> q (4, H/8), k (H/8)           (k never transmitted)
    g_a(x, [q ; one_hot(k)], betas) = y (H/16) --h_a--> z (H/64)
    z --EntropyBottleneck--> z_hat --h_s--> hyper_out --ChARM--> y_hat     (bitstream: z, y)
    g_s(y_hat, betas) -> feat (H/8), {block_1_8, block_1_4, block_1_2}
    feat --VQ estimator--> logits (256, H/8) --argmax--> codebook --post_quant_conv--> VQGAN
    decoder with SFT fusion of the g_s features -> x_hat

CompressAI contract: ``forward`` (rates from likelihoods), ``compress -> {"strings", "shape"}``,
``decompress -> {"x_hat"}``, ``update()``, ``aux_loss()``. During compress/decompress the entropy
parameters (h_s, ChARM) are computed on the CPU in exact integer arithmetic with the stored CDF
tables, so that a stream made on one machine or device decodes bit for bit on any other (see
``HyperpriorCharmLatentCodec.on_cpu``).
``beta_cond=False`` is the unconditioned step-1-1 model.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from compressai.models.base import get_scale_table
from compressai.models.utils import remap_old_keys
from torch import Tensor, nn

# imported for their registrations in SUBNETS (g_a / g_s, estimator / fusion, entropy models)
import src.models.codec.transforms  # noqa: F401
import src.models.codec.vq_modules  # noqa: F401
import src.models.entropy  # noqa: F401
from src.models.codec.betas import BetaSpace
from src.models.codec.latent_codec import HyperpriorCharmLatentCodec
from src.models.entropy.buffers import resize_entropy_buffers
from src.models.entropy.rate import bits_per_pixel
from src.utils.config import strip_markers
from src.utils.registry import MODELS, SUBNETS

logger = logging.getLogger(__name__)
ENC_VQ_INPUTS = ("onehot_indices", "norm_indices")


def _window_starts(n: int, win: int, step: int) -> List[int]:
    """Starts of windows of ``win`` covering ``n`` every ``step``, the last flush with the end."""
    return [0] if n <= win else list(range(0, n - win, step)) + [n - win]


def _keep_range(start: int, starts: List[int], step: int, n: int) -> Tuple[int, int]:
    """Part of the window at ``start`` kept in the output (see ``DCVIC.decode_split``)."""
    lo = start + step // 2 if start > 0 else 0
    hi = start + step // 2 + step if start != starts[-1] else n
    return lo, hi


class DCVIC(nn.Module):
    """The codec, composed of already built subnetworks (see ``build_dcvic_from_config``).

    Attribute names are those of the reference model, so that its ``comp_model`` state dicts
    (``encoder.*``, ``decoder.*``, ``hyperencoder.*``, ``hyperdecoder.*``, ``context_model.*``,
    ``entropy_model_z.*``, ``entropy_model_y.*``, ``vq_estimator.*``, ``fusion_module.*``,
    ``vq_model.*``) load strictly. The VQGAN is frozen and left out of
    :meth:`trainable_parameters`.
    """

    def __init__(self, *, encoder: nn.Module, decoder: nn.Module, hyperencoder: nn.Module,
                 hyperdecoder: nn.Module, context_model: nn.Module, entropy_model_z: nn.Module,
                 entropy_model_y: nn.Module, vq_estimator: nn.Module, fusion_module: nn.Module,
                 vq_model: nn.Module, beta_cond: bool = True,
                 enc_vq_input: str = "onehot_indices", beta_space: Optional[BetaSpace] = None,
                 split_threshold: int = 1024):
        super().__init__()
        if enc_vq_input not in ENC_VQ_INPUTS:
            raise ValueError(f"enc_vq_input must be one of {ENC_VQ_INPUTS}, got {enc_vq_input!r}")
        self.encoder, self.decoder = encoder, decoder
        self.hyperencoder, self.hyperdecoder = hyperencoder, hyperdecoder
        self.context_model = context_model
        self.entropy_model_z, self.entropy_model_y = entropy_model_z, entropy_model_y
        self.vq_estimator, self.fusion_module = vq_estimator, fusion_module
        self.vq_model = vq_model
        self.vq_model.requires_grad_(False)
        self.beta_cond = beta_cond
        self.enc_vq_input = enc_vq_input
        self.n_embed = int(vq_model.n_embed)
        #: maxima, grid and selected pairs of the betas (built from the config saved with the run)
        self.beta_space = beta_space if beta_space is not None else BetaSpace()
        # eval: images with a side above split_threshold px are decoded in windows
        self.split_threshold, self.split_window, self.split_stride = split_threshold, 512, 256

    # -- helpers ------------------------------------------------------------------------------
    @property
    def latent_codec(self) -> HyperpriorCharmLatentCodec:
        """h_a, bottleneck, h_s and ChARM wired as one latent codec (CompressAI's contract). Made on
        each access from the modules registered here, so the state dict keeps the reference's names
        and a replaced module is the one used."""
        return HyperpriorCharmLatentCodec(self.hyperencoder, self.hyperdecoder, self.context_model,
                                          self.entropy_model_z, self.entropy_model_y)

    @property
    def device(self) -> torch.device:
        return next(self.encoder.parameters()).device

    def _betas(self, beta_rate, beta_vq) -> Tuple:
        return (beta_rate, beta_vq) if self.beta_cond else (None, None)

    def trainable_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Named parameters for the main optimizer: not the VQGAN, not the bottleneck quantiles."""
        for name, p in self.named_parameters():
            if p.requires_grad and not name.startswith("vq_model.") and not name.endswith(".quantiles"):
                yield name, p

    def aux_parameters(self) -> Iterator[Tuple[str, nn.Parameter]]:
        """Named ``quantiles`` of the entropy bottleneck, for the auxiliary optimizer."""
        for name, p in self.named_parameters():
            if name.endswith(".quantiles"):
                yield name, p

    def aux_loss(self) -> Tensor:
        return self.entropy_model_z.loss()

    def update(self, force: bool = False) -> bool:
        """Build the CDF tables (after training / loading); True if anything changed."""
        updated = self.entropy_model_z.update(force=force)
        updated |= self.entropy_model_y.update_scale_table(get_scale_table(), force=force)
        return updated

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """Resizes the CDF buffers to the stored ones, then loads (CompressAI semantics)."""
        state_dict = remap_old_keys("entropy_model_z", dict(state_dict))
        resize_entropy_buffers(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    # -- encoder side -------------------------------------------------------------------------
    @torch.no_grad()
    def vq_encode(self, x: Tensor, vq_indices: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Frozen VQGAN -> (codebook latent (B, 4, H/8, W/8), indices (B, H/8, W/8)).

        Cached ``vq_indices`` (e.g. stored with a validation set) skip the VQGAN encoder. In eval
        mode, images with a side above ``split_threshold`` are encoded in windows."""
        if vq_indices is None and not self.training and max(x.shape[-2:]) > self.split_threshold:
            vq_indices = self.vq_indices_split(x, self.split_window, self.split_stride)
        elif vq_indices is None:
            vq_indices = self.vq_model.encode(x)[1]
        vq_indices = vq_indices.to(x.device).long()
        # exact codebook rows (the quantiser's straight-through output may differ by an ulp)
        return self.vq_model.indices_to_latent(vq_indices), vq_indices

    @torch.no_grad()
    def vq_indices_split(self, x: Tensor, window: int = 512, stride: int = 256) -> Tensor:
        """VQGAN indices of a large image from overlapping windows, keeping each window's centre
        (the windows of :meth:`decode_split`). The VQGAN's mid-block attention is quadratic in the
        number of H/8 positions: a 4096 px image would need a 275 GB attention map in one piece."""
        f = int(self.vq_model.downsample_factor)
        B, _, H, W = x.shape
        h, w, win, step = H // f, W // f, window // f, stride // f
        out = torch.empty(B, h, w, dtype=torch.long, device=x.device)
        tops, lefts = _window_starts(h, win, step), _window_starts(w, win, step)
        for t in tops:
            for l in lefts:
                idx = self.vq_model.encode(x[:, :, t * f:(t + win) * f, l * f:(l + win) * f])[1]
                y0, y1 = _keep_range(t, tops, step, h)
                x0, x1 = _keep_range(l, lefts, step, w)
                out[:, y0:y1, x0:x1] = idx[:, y0 - t:y1 - t, x0 - l:x1 - l]
        return out

    def _vq_feature(self, latent: Tensor, indices: Tensor) -> Tensor:
        if self.enc_vq_input == "onehot_indices":
            ind = F.one_hot(indices, self.n_embed).permute(0, 3, 1, 2).float()
        else:
            ind = (indices.float() / (self.n_embed - 1)).unsqueeze(1)
        return torch.cat([latent, ind], dim=1).detach()

    def encode(self, x: Tensor, beta_rate=None, beta_vq=None,
               vq_indices: Optional[Tensor] = None) -> Dict[str, Tensor]:
        """g_a: -> {"y", "vq_latent", "vq_indices"} (VQ ground truth from the frozen VQGAN)."""
        latent, indices = self.vq_encode(x, vq_indices)
        y = self.encoder(x, self._vq_feature(latent, indices), *self._betas(beta_rate, beta_vq))
        return {"y": y, "vq_latent": latent, "vq_indices": indices}

    def entropy(self, y: Tensor, training: Optional[bool] = None) -> Dict[str, object]:
        """h_a, bottleneck, h_s and ChARM (:attr:`latent_codec`): -> y_hat, z_hat, likelihoods
        (and those of the rounded latents)."""
        return self.latent_codec(y, training=self.training if training is None else training)

    # -- decoder side -------------------------------------------------------------------------
    def decode(self, y_hat: Tensor, beta_rate=None, beta_vq=None,
               fusion_w: float = 1.0) -> Dict[str, Tensor]:
        """g_s -> VQ estimator -> argmax codes -> VQGAN decoder with SFT fusion."""
        feat, cond_feats = self.decoder.get_feats(y_hat, *self._betas(beta_rate, beta_vq))
        latent_hat, logits = self.vq_estimator(feat)
        indices_hat = logits.argmax(dim=1)
        z_q = self.vq_model.post_quant_conv(self.vq_model.indices_to_latent(indices_hat))
        x_hat = self.fusion_module(z_q, cond_feats, self.vq_model.decoder, w=fusion_w)
        return {"x_hat": x_hat, "vq_logits": logits, "vq_latent_hat": latent_hat,
                "vq_indices_hat": indices_hat}

    @torch.no_grad()
    def decode_split(self, y_hat: Tensor, beta_rate=None, beta_vq=None, fusion_w: float = 1.0,
                     window: int = 512, stride: int = 256) -> Tensor:
        """Inference decoding of a large image in overlapping windows (pixels; y is H/16).

        Each window (``window`` px, start every ``stride`` px, the last one flush with the
        border) is decoded alone; of each, the part from ``stride/2`` past its start to
        ``stride/2`` past the next start is kept (the whole border side for the first/last).
        """
        df = 16
        win, step = window // df, stride // df
        B, _, yh, yw = y_hat.shape
        out = y_hat.new_zeros(B, 3, yh * df, yw * df)
        tops, lefts = _window_starts(yh, win, step), _window_starts(yw, win, step)
        for t in tops:
            for l in lefts:
                patch = y_hat[:, :, t:t + win, l:l + win]
                x = self.decode(patch, beta_rate, beta_vq, fusion_w)["x_hat"]
                y0, y1 = _keep_range(t, tops, step, yh)
                x0, x1 = _keep_range(l, lefts, step, yw)
                out[:, :, y0 * df:y1 * df, x0 * df:x1 * df] = \
                    x[:, :, (y0 - t) * df:(y1 - t) * df, (x0 - l) * df:(x1 - l) * df]
        return out

    def _reconstruct(self, y_hat: Tensor, beta_rate, beta_vq, fusion_w: float) -> Dict[str, Tensor]:
        """decode(), or decode_split() in eval mode for images larger than ``split_threshold``."""
        if not self.training and max(y_hat.shape[-2:]) * 16 > self.split_threshold:
            return {"x_hat": self.decode_split(y_hat, beta_rate, beta_vq, fusion_w,
                                               self.split_window, self.split_stride)}
        return self.decode(y_hat, beta_rate, beta_vq, fusion_w)

    def forward(self, x: Tensor, beta_rate=None, beta_vq=None, vq_indices: Optional[Tensor] = None,
                fusion_w: float = 1.0, fix_entropy_models: bool = False) -> Dict[str, object]:
        """x (B, 3, H, W) in [-1, 1], H and W multiples of 64; betas: floats or (B,) tensors.

        Returns x_hat (clamped to [-1, 1] in eval mode only), likelihoods {y, z} (noisy in
        training), q_likelihoods (of the rounded latents), per-sample bpp / bpp_y / bpp_z from
        ``likelihoods``, vq_logits, vq_latent_hat, vq_indices_hat, the VQGAN ground truth
        vq_latent / vq_indices, y, y_hat, z_hat. ``fix_entropy_models`` runs g_a and the entropy
        models without gradients (step 1-3). In eval mode, images with a side above
        ``split_threshold`` are decoded in windows and the vq_* estimates are not returned.
        """
        B, _, H, W = x.shape
        if H % 64 or W % 64:
            raise ValueError(f"H and W must be multiples of 64 (pad first), got {H}x{W}")
        with torch.set_grad_enabled(torch.is_grad_enabled() and not fix_entropy_models):
            enc = self.encode(x, beta_rate, beta_vq, vq_indices)
            ent = self.entropy(enc["y"])
        dec = self._reconstruct(ent["y_hat"], beta_rate, beta_vq, fusion_w)
        if not self.training:
            dec["x_hat"] = dec["x_hat"].clamp(-1.0, 1.0)
        bpp_y = bits_per_pixel(ent["likelihoods"]["y"], H * W)
        bpp_z = bits_per_pixel(ent["likelihoods"]["z"], H * W)
        return {**dec, **ent, **enc, "bpp": bpp_y + bpp_z, "bpp_y": bpp_y, "bpp_z": bpp_z}

    # -- bitstream ----------------------------------------------------------------------------
    @torch.no_grad()
    def compress(self, x: Tensor, beta_rate=None, beta_vq=None, vq_indices: Optional[Tensor] = None,
                 estimate: bool = False) -> Dict[str, object]:
        """g_a, then :meth:`HyperpriorCharmLatentCodec.compress`: -> {"strings": [[one string per
        sample]], "shape": z (h, w), "y_hat": the y_hat the receiver decodes (float32, CPU),
        "ideal_bits": per sample {"z", "y"}} (+ "estimated_bits" per sample with ``estimate``, the
        model's own estimate for the same latents, from this pass)."""
        y = self.encode(x, beta_rate, beta_vq, vq_indices)["y"]
        return self.latent_codec.compress(y, estimate=estimate)

    @torch.no_grad()
    def decompress_latent(self, strings: Sequence[List[bytes]], shape: Sequence[int]) -> Tensor:
        """Entropy decoding only (on the CPU): strings -> y_hat (float32, on the CPU), the bits
        of ``compress``'s ``y_hat`` on any machine."""
        return self.latent_codec.decompress(strings, shape)["y_hat"]

    @torch.no_grad()
    def decompress(self, strings: Sequence[List[bytes]], shape: Sequence[int], beta_rate=None,
                   beta_vq=None, fusion_w: float = 1.0) -> Dict[str, Tensor]:
        """-> {"x_hat" in [-1, 1] (padded size; the caller crops), "y_hat" (CPU)}."""
        y_hat = self.decompress_latent(strings, shape)
        return {"x_hat": self.reconstruct(y_hat, beta_rate, beta_vq, fusion_w), "y_hat": y_hat}

    @torch.no_grad()
    def reconstruct(self, y_hat: Tensor, beta_rate=None, beta_vq=None, fusion_w: float = 1.0) -> Tensor:
        """The receiver's image from a decoded y_hat: x_hat in [-1, 1] (padded size)."""
        return self._reconstruct(y_hat.to(self.device), beta_rate, beta_vq, fusion_w)["x_hat"].clamp(-1.0, 1.0)


# -- building from the reference config ---------------------------------------------------------
MODEL_TYPES = {"HyperpriorCharmDualCondVicModel": True, "HyperpriorCharmVicModel": False}
#: model-section keys that only the trainer reads (beta sampling); the model ignores them.
TRAINER_KEYS = ("fixed_beta_vq", "use_selected_beta_pairs", "gumbel_kwargs")
#: model-section keys of the beta space (:class:`BetaSpace`)
BETA_KEYS = ("num_beta_levels", "selected_beta_rate", "selected_beta_vq")
SUBNET_NAMES = ("encoder", "decoder", "hyperencoder", "hyperdecoder", "context_model",
                "entropy_model_z", "entropy_model_y", "vq_estimator")


def build_dcvic_from_config(model_cfg: Mapping[str, Any], subnet_cfg: Mapping[str, Any],
                            vq_ckpt_path: Optional[str] = None) -> DCVIC:
    """Build DC-VIC from the reference config's ``model:`` and ``subnet:`` sections (plain dicts).

    ``vq_ckpt_path`` overrides ``subnet.vq_model.ckpt_path`` (None there gives a random VQGAN,
    with a warning). Subnet sections are built by type through ``SUBNETS``; the fusion module
    section has no type in the reference and defaults to ``VqDecFusionModule``.
    """
    from src.models.vq.vqgan import build_pretrained_vq_model

    model_cfg = dict(model_cfg)
    mtype = model_cfg.pop("type", "HyperpriorCharmDualCondVicModel")
    if mtype not in MODEL_TYPES:
        raise KeyError(f"unknown DC-VIC model type {mtype!r}; known: {sorted(MODEL_TYPES)}")
    beta_cond = MODEL_TYPES[mtype]
    for key in TRAINER_KEYS:
        model_cfg.pop(key, None)
    for key in ("gumbel_sampling", "enc_input_vq_recon"):
        if model_cfg.pop(key, False):
            raise NotImplementedError(f"model.{key}=True is not supported "
                                      "(the published models do not use it)")
    sub = strip_markers(copy.deepcopy(dict(subnet_cfg)))
    missing = [k for k in SUBNET_NAMES + ("vq_model", "fusion_module") if k not in sub]
    if missing:
        raise KeyError(f"subnet config lacks {missing}")
    space = BetaSpace.from_config({k: model_cfg.pop(k) for k in BETA_KEYS if k in model_cfg}, sub)
    if beta_cond:
        for name in ("encoder", "decoder"):
            for key, value in zip(("max_beta_1", "max_beta_2"), space.maxima):
                if sub[name].get(key) is None:
                    logger.warning("subnet.%s.%s is null; using %s", name, key, value)
                sub[name][key] = value
    vq_cfg = dict(sub["vq_model"])
    if vq_ckpt_path is not None:
        vq_cfg["ckpt_path"] = vq_ckpt_path
    vq_model = build_pretrained_vq_model(**vq_cfg)
    subnets = {name: SUBNETS.build(sub[name]) for name in SUBNET_NAMES}
    subnets["fusion_module"] = SUBNETS.build({"type": "VqDecFusionModule", **sub["fusion_module"]})
    return DCVIC(**subnets, vq_model=vq_model, beta_cond=beta_cond, beta_space=space, **model_cfg)


def _model_factory(mtype: str):
    def build(subnet: Mapping[str, Any], vq_ckpt_path: Optional[str] = None, **model_kwargs) -> DCVIC:
        return build_dcvic_from_config({"type": mtype, **model_kwargs}, subnet, vq_ckpt_path)
    build.__name__ = mtype
    build.__doc__ = f"``MODELS.build(cfg['model'], subnet=cfg['subnet'])`` -> DC-VIC ({mtype})."
    return build


for _mtype in MODEL_TYPES:
    MODELS.register(_mtype)(_model_factory(_mtype))
