"""VQGAN tokenizer, state-dict compatible with the published taming-transformers / latent-diffusion
first-stage models, and a loader for their checkpoints.

Esser, Rombach & Ommer, "Taming Transformers for High-Resolution Image Synthesis", CVPR 2021.
Rombach et al., "High-Resolution Image Synthesis with Latent Diffusion Models", CVPR 2022.

    x in [-1, 1] -> encoder -> quant_conv -> quantize -> (latent, indices)
    latent -> post_quant_conv -> decoder -> x_hat

Parameter names: ``encoder.*``, ``decoder.*``, ``quantize.embedding.weight``, ``quant_conv.*``,
``post_quant_conv.*`` (the ``loss.*`` entries of the official checkpoints are dropped on load).
"""
from __future__ import annotations

import logging
import os
import pickle
import types
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence

import torch
from torch import nn

from ...utils.paths import looked_for, resolve_input
from ...utils.registry import MODELS
from .backbone import Decoder, Encoder, FeatureHook
from .quantizers import QuantizerOutput, VectorQuantizer, build_quantizer

logger = logging.getLogger(__name__)

DDCONFIG_KEYS = ("double_z", "z_channels", "resolution", "in_channels", "out_ch", "ch", "ch_mult",
                 "num_res_blocks", "attn_resolutions", "dropout")

# Official configurations (embed_dim, n_embed, ddconfig), for reference and tests.
_F8 = dict(double_z=False, z_channels=4, resolution=256, in_channels=3, out_ch=3, ch=128,
           ch_mult=[1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[32], dropout=0.0)
_F16 = dict(double_z=False, z_channels=256, resolution=256, in_channels=3, out_ch=3, ch=128,
            ch_mult=[1, 1, 2, 2, 4], num_res_blocks=2, attn_resolutions=[16], dropout=0.0)
OFFICIAL_CONFIGS: Dict[str, Dict[str, Any]] = {
    "f8-n256": dict(embed_dim=4, n_embed=256, ddconfig=_F8),
    "f16-n1024": dict(embed_dim=256, n_embed=1024, ddconfig=_F16),
    "f16-n16384": dict(embed_dim=256, n_embed=16384, ddconfig=_F16),
}

_WHERE_PUBLISHED = (
    "Official checkpoints: f8 with 256 codes is latent-diffusion's first-stage model 'vq-f8-n256', "
    "https://ommer-lab.com/files/latent-diffusion/vq-f8-n256.zip (unzip; model.ckpt inside); "
    "f16 with 1024 or 16384 codes are the 'VQGAN ImageNet (f=16)' models in the pretrained-model "
    "table of the taming-transformers README, "
    "https://github.com/CompVis/taming-transformers#overview-of-pretrained-models "
    "(the checkpoint is ckpts/last.ckpt in the download).")


def _check_ddconfig(ddconfig: Mapping[str, Any]) -> Dict[str, Any]:
    unknown = sorted(set(ddconfig) - set(DDCONFIG_KEYS) - {"resamp_with_conv"})
    missing = sorted(set(DDCONFIG_KEYS) - set(ddconfig) - {"dropout", "double_z"})
    if unknown or missing:
        raise KeyError(f"ddconfig: unknown keys {unknown}, missing keys {missing}; "
                       f"valid keys: {', '.join(DDCONFIG_KEYS)}")
    dd = {"dropout": 0.0, "double_z": False, **ddconfig}
    if dd.get("resamp_with_conv", True) is not True:
        raise ValueError("ddconfig.resamp_with_conv=False is not supported")
    if dd["double_z"]:
        raise ValueError("VQGAN needs ddconfig.double_z=False (double_z is for KL autoencoders)")
    return dd


@MODELS.register("VQGAN")
class VQGAN(nn.Module):
    """VQGAN with taming-compatible parameter names.

    Args:
        embed_dim: code dimension (channels of the quantised latent).
        n_embed: codebook size.
        ddconfig: encoder/decoder settings, keys :data:`DDCONFIG_KEYS`.
        beta, distance, legacy_beta: options of the default :class:`VectorQuantizer` (legacy_beta
            True reproduces the published models' loss weighting).
        quantizer: optional quantizer section, e.g. ``{"type": "fsq"}``; ``dim`` and
            ``codebook_size`` default to ``embed_dim`` and ``n_embed``.
    """

    def __init__(self, *, embed_dim: int, n_embed: int, ddconfig: Mapping[str, Any],
                 beta: float = 0.25, distance: str = "l2", legacy_beta: bool = True,
                 quantizer: Optional[Mapping[str, Any]] = None):
        super().__init__()
        dd = _check_ddconfig(ddconfig)
        common = {k: dd[k] for k in ("ch", "ch_mult", "num_res_blocks", "attn_resolutions",
                                     "resolution", "z_channels", "dropout")}
        self.encoder = Encoder(in_channels=dd["in_channels"], double_z=False, **common)
        self.decoder = Decoder(out_ch=dd["out_ch"], **common)
        if quantizer is None:
            self.quantize = VectorQuantizer(n_embed, embed_dim, beta=beta, distance=distance,
                                            legacy_beta=legacy_beta)
        else:
            self.quantize = build_quantizer(**{"dim": embed_dim, "codebook_size": n_embed,
                                               **quantizer})
        self.quant_conv = nn.Conv2d(dd["z_channels"], embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(embed_dim, dd["z_channels"], 1)
        self.embed_dim, self.n_embed = embed_dim, n_embed
        self.downsample_factor = 2 ** (len(dd["ch_mult"]) - 1)
        self.frozen = False

    # -- encoding -----------------------------------------------------------------------------
    def encode_continuous(self, x: torch.Tensor) -> torch.Tensor:
        """Pre-quantisation latent ``quant_conv(encoder(x))``, (B, embed_dim, H/f, W/f)."""
        return self.quant_conv(self.encoder(x))

    def quantize_latent(self, h: torch.Tensor) -> QuantizerOutput:
        return self.quantize(h)

    def encode(self, x: torch.Tensor):
        """x in [-1, 1], (B, 3, H, W) -> (quantised latent (B, embed_dim, H/f, W/f),
        indices LongTensor (B, H/f, W/f)); H and W must be divisible by f."""
        f = self.downsample_factor
        if x.shape[-1] % f or x.shape[-2] % f:
            raise ValueError(f"image size {tuple(x.shape[-2:])} must be divisible by {f}; pad it")
        out = self.quantize(self.encode_continuous(x))
        return out.quantized, out.indices

    # -- decoding -----------------------------------------------------------------------------
    def decode(self, latent: torch.Tensor,
               feature_hook: Optional[FeatureHook] = None) -> torch.Tensor:
        """Quantised latent -> image in about [-1, 1]; ``feature_hook`` as in :class:`Decoder`."""
        return self.decoder(self.post_quant_conv(latent), feature_hook=feature_hook)

    def indices_to_latent(self, indices: torch.Tensor) -> torch.Tensor:
        """Codebook lookup: (B, h, w) indices -> (B, embed_dim, h, w)."""
        return self.quantize.indices_to_codes(indices)

    def decode_indices(self, indices: torch.Tensor,
                       feature_hook: Optional[FeatureHook] = None) -> torch.Tensor:
        return self.decode(self.indices_to_latent(indices), feature_hook=feature_hook)

    def forward(self, x: torch.Tensor) -> Dict[str, Any]:
        """Reconstruction for training: ``{"x_hat", "quant": QuantizerOutput}``."""
        q = self.quantize(self.encode_continuous(x))
        return {"x_hat": self.decode(q.quantized), "quant": q}

    def get_last_layer(self) -> torch.Tensor:
        """Weight of the decoder's last conv (for the adaptive GAN weight of taming)."""
        return self.decoder.conv_out.weight

    # -- freezing -----------------------------------------------------------------------------
    def freeze(self) -> "VQGAN":
        """No gradients, eval mode, and :meth:`train` keeps it in eval mode from now on."""
        self.requires_grad_(False)
        self.frozen = True
        return super().train(False)

    def train(self, mode: bool = True) -> "VQGAN":
        return super().train(False if self.frozen else mode)


# -- checkpoints --------------------------------------------------------------------------------
class InertGlobal:
    """Stands in for a global that a checkpoint pickles and that is not on the weights-only allow
    list (Lightning callbacks, ``argparse.Namespace`` hyper-parameters, ... or ``os.system`` in a
    hostile file). Calling it, as unpickling does, only records the arguments; nothing is imported
    and no code of the file runs."""

    def __init__(self, *args, **kwargs):
        self.__dict__["_args"] = args

    def __setstate__(self, state):
        self.__dict__["_state"] = state


def _allowed_globals() -> Dict[str, Any]:
    """What ``torch.load(weights_only=True)`` allows: tensor and storage rebuilding, dtypes, plain containers."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return dict(_get_allowed_globals())


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only the weights-only allow list; every other global becomes an :class:`InertGlobal`."""

    _allowed: Optional[Dict[str, Any]] = None

    def find_class(self, module: str, name: str):
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_globals()
        found = self._allowed.get(f"{module}.{name}")
        if found is not None:
            return found
        return type(name, (InertGlobal,), {"__module__": f"inert.{module}"})


_RESTRICTED_PICKLE = types.ModuleType("restricted_pickle")
_RESTRICTED_PICKLE.Unpickler = _RestrictedUnpickler
_RESTRICTED_PICKLE.load = lambda f, **kw: _RestrictedUnpickler(f, **kw).load()


def load_checkpoint_file(path: str, trust: bool = False) -> Any:
    """``torch.load`` on CPU without running code from the file.

    Weights-only first; official Lightning / taming checkpoints also pickle training objects
    (callbacks, hyper-parameters), which are then read by a restricted unpickler: tensors and
    plain containers are rebuilt, every other global is an inert :class:`InertGlobal`. Only
    ``trust=True`` unpickles fully (it can run any code).
    """
    if trust:
        logger.warning("unpickling %s fully (trust=True): it can run code", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        from ...utils.checkpoint import unpickling_detail

        logger.info("%s pickles more than weights (%s); reading it with inert stand-ins", path, unpickling_detail(e))
    return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_RESTRICTED_PICKLE)


def vq_state_dict(ckpt: Mapping[str, Any],
                  drop_prefixes: Sequence[str] = ("loss.",)) -> Dict[str, torch.Tensor]:
    """The model weights of a checkpoint: ``ckpt["state_dict"]`` (official files),
    ``ckpt["comp_model"]`` (this project's training checkpoints) or ``ckpt`` itself, without
    the keys under ``drop_prefixes`` (the official files carry the training loss's LPIPS and
    discriminator as ``loss.*``)."""
    sd = ckpt["state_dict"] if "state_dict" in ckpt else ckpt.get("comp_model", ckpt)
    return {k: v for k, v in sd.items() if not any(k.startswith(p) for p in drop_prefixes)}


@torch.no_grad()
def reconstruct(model: nn.Module, x: torch.Tensor):
    """(B, 3, H, W) in [-1, 1] -> (reconstruction cropped to H x W, indices (B, ceil(H/f), ceil(W/f))).

    ``model``: a tokenizer with the VQGAN contract (``downsample_factor``; ``forward`` returns
    ``x_hat`` and ``quant``); the input is padded by reflection to a multiple of the factor."""
    from ...utils.padding import crop_to, pad_to_multiple

    h, w = x.shape[-2:]
    xp, _ = pad_to_multiple(x, model.downsample_factor)
    out = model(xp)
    return crop_to(out["x_hat"].float(), h, w), out["quant"].indices


def expected_checkpoint_name(n_embed: int, ddconfig: Mapping[str, Any]) -> str:
    """File name we expect for a configuration, e.g. ``vq-f8-n256.ckpt``."""
    return f"vq-f{2 ** (len(ddconfig['ch_mult']) - 1)}-n{n_embed}.ckpt"


def build_pretrained_vq_model(ckpt_path: Optional[str], embed_dim: int, n_embed: int,
                              ddconfig: Mapping[str, Any], *, freeze: bool = True,
                              monitor: Any = None, lossconfig: Any = None, trust: bool = False,
                              **kwargs: Any) -> VQGAN:
    """Build a :class:`VQGAN` and load an official (or our own) checkpoint strictly.

    Takes the ``params`` section of the official configs as keyword arguments; ``monitor`` and
    ``lossconfig`` are accepted and ignored. ``ckpt_path=None`` gives random weights (with a
    warning): only for smoke tests. With ``freeze`` the model has no gradients and stays in eval
    mode when a parent module calls ``.train()``.
    """
    model = VQGAN(embed_dim=embed_dim, n_embed=n_embed, ddconfig=ddconfig, **kwargs)
    if ckpt_path is None:
        msg = ("build_pretrained_vq_model: ckpt_path is None, the VQGAN is RANDOMLY INITIALISED; "
               "results are meaningless except for smoke tests. " + _WHERE_PUBLISHED)
        warnings.warn(msg, stacklevel=2)
        logger.warning(msg)
    else:
        path = str(resolve_input(ckpt_path, "file"))  # relative: the current directory, then the repository
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"VQGAN checkpoint not found: {str(ckpt_path)!r} (looked for: {looked_for(ckpt_path)}). Expected "
                f"{expected_checkpoint_name(n_embed, ddconfig)} for embed_dim={embed_dim}, "
                f"n_embed={n_embed}, ch_mult={list(ddconfig['ch_mult'])}. {_WHERE_PUBLISHED}")
        model.load_state_dict(vq_state_dict(load_checkpoint_file(path, trust=trust)), strict=True)
        logger.info("loaded VQGAN weights from %s", path)
    return model.freeze() if freeze else model
