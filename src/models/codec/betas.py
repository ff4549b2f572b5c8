"""BetaSpace: the one home of DC-VIC's two conditioning betas (Iwai et al. 2024, Sec. III-B/C).

``beta_rate`` in ``[0, max_rate]`` trades rate for distortion, ``beta_vq`` in ``[0, max_vq]``
weighs the VQ-estimation terms; the published maxima are 3.0 and 3.5. The model owns one
:class:`BetaSpace` (``DCVIC.beta_space``, built from the config that is saved with every run and
checkpoint) and everything that handles betas asks it:

* the networks' Fourier encodings normalise with :func:`src.models.layers.conditioning.normalise` (``(beta / max - 0.5) * 2``,
  the reference's expression, so a released checkpoint sees the same floats);
* the trainer draws from the grid (level ``i`` of ``levels`` -> ``i / levels * max`` in float32,
  the reference's ``_sample_beta``) or from the selected pairs, and validates at the corners;
* the loss weight of a beta (:func:`src.losses.beta_weight`, the trainer's one policy);
* the rate search's range ``[0, max_rate]`` and its beta tensors;
* ``ImageCoder`` (quality index <-> selected pair as float32, range checks of a header's betas)
  and ``compress.py -q`` (a fractional quality interpolates between neighbouring pairs);
* the discriminator's maxima (the model's, unless its config section names its own).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Mapping, Optional, Tuple, Union

import torch
from torch import Tensor

from src.models.layers.conditioning import BetaLike, as_beta_tensor, normalise

#: the published maxima of beta_rate and beta_vq (used when a config leaves them null)
PUBLISHED_MAX_RATE, PUBLISHED_MAX_VQ = 3.0, 3.5
#: the reference's ``num_beta_levels``: intervals of the grid, so 101 values
DEFAULT_LEVELS = 100
#: quality indexes a stream header can carry (one byte)
MAX_QUALITY_INDEXES = 256


def as_float32(value: Optional[float]) -> float:
    """The float32 value a beta is coded and conditioned as (None -> 0.0)."""
    return float(torch.tensor(0.0 if value is None else float(value), dtype=torch.float32))


@dataclass(frozen=True)
class BetaSpace:
    """Maxima, grid and selected (beta_rate, beta_vq) pairs of a beta-conditioned model."""

    max_rate: float = PUBLISHED_MAX_RATE
    max_vq: float = PUBLISHED_MAX_VQ
    levels: int = DEFAULT_LEVELS
    selected: Tuple[Tuple[float, float], ...] = ()

    def __post_init__(self):
        for name in ("max_rate", "max_vq"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"BetaSpace.{name} must be a positive number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.levels, int) or self.levels < 1:
            raise ValueError(f"the beta grid needs at least 1 interval (num_beta_levels), got {self.levels!r}")
        pairs = tuple((float(r), float(v)) for r, v in self.selected)
        for r, v in pairs:
            if not (0.0 <= r <= self.max_rate and 0.0 <= v <= self.max_vq):
                raise ValueError(f"selected pair ({r}, {v}) lies outside [0, {self.max_rate}] x [0, {self.max_vq}]")
        object.__setattr__(self, "selected", pairs)

    # ------------------------------------------------------------------ building
    @classmethod
    def from_config(cls, model_cfg: Mapping[str, Any], subnet_cfg: Optional[Mapping[str, Any]] = None) -> "BetaSpace":
        """From the ``model:`` section (``num_beta_levels``, ``selected_beta_rate/vq``) and the
        maxima of ``subnet.encoder`` (``max_beta_1/2``; null or absent: the published ones).
        The decoder's maxima, when given, must agree with the encoder's."""
        rates, vqs = model_cfg.get("selected_beta_rate") or [], model_cfg.get("selected_beta_vq") or []
        if len(rates) != len(vqs):
            raise ValueError(f"model.selected_beta_rate ({len(rates)}) and selected_beta_vq ({len(vqs)}) "
                             "must have equal lengths")
        maxima = []
        for key, published in (("max_beta_1", PUBLISHED_MAX_RATE), ("max_beta_2", PUBLISHED_MAX_VQ)):
            values = {float(v) for name in ("encoder", "decoder")
                      if (v := ((subnet_cfg or {}).get(name) or {}).get(key)) is not None}
            if len(values) > 1:
                raise ValueError(f"subnet.encoder.{key} and subnet.decoder.{key} differ ({sorted(values)}): "
                                 "the model has one beta range")
            maxima.append(values.pop() if values else published)
        return cls(maxima[0], maxima[1], int(model_cfg.get("num_beta_levels", DEFAULT_LEVELS)),
                   tuple(zip(rates, vqs)))

    # ------------------------------------------------------------------ values
    @property
    def maxima(self) -> Tuple[float, float]:
        return self.max_rate, self.max_vq

    def level(self, i: Union[int, Tensor], max_beta: float) -> Tensor:
        """Grid value(s) ``(i / levels) * max_beta`` in float32 (the reference's expression)."""
        return (torch.as_tensor(i).float() / float(self.levels)) * max_beta

    def grid(self, max_beta: float) -> Tensor:
        """All ``levels + 1`` grid values of one beta, float32."""
        return self.level(torch.arange(self.levels + 1), max_beta)

    @property
    def selected_float32(self) -> List[Tuple[float, float]]:
        """The selected pairs as the float32 values the coder conditions on."""
        return [(as_float32(r), as_float32(v)) for r, v in self.selected]

    def pair(self, quality: float) -> Tuple[float, float]:
        """The pair of a quality index into the selected pairs; a fractional index interpolates
        linearly between its neighbours (both betas)."""
        n = len(self.selected)
        if n == 0:
            raise ValueError("the model has no selected beta pairs (model.selected_beta_rate / selected_beta_vq); "
                             "pass --beta_rate and --beta_vq instead")
        if not 0 <= quality <= n - 1:
            raise ValueError(f"quality must be in [0, {n - 1}] for this model, got {quality}")
        lo = int(quality)
        hi = min(lo + 1, n - 1)
        t = quality - lo
        (r0, v0), (r1, v1) = self.selected[lo], self.selected[hi]
        return r0 * (1 - t) + r1 * t, v0 * (1 - t) + v1 * t

    def quality_of(self, beta_rate: float, beta_vq: float) -> Optional[int]:
        """Index of the selected pair equal (as float32) to these betas, or None."""
        pairs = self.selected_float32[:MAX_QUALITY_INDEXES]
        key = (as_float32(beta_rate), as_float32(beta_vq))
        return pairs.index(key) if key in pairs else None

    def contains(self, beta_rate: float, beta_vq: float) -> bool:
        """Both betas inside their ranges (NaN is not)."""
        return 0.0 <= beta_rate <= self.max_rate and 0.0 <= beta_vq <= self.max_vq

    # ------------------------------------------------------------------ tensors
    def normalise(self, beta_rate: Tensor, beta_vq: Tensor) -> Tuple[Tensor, Tensor]:
        """Both betas mapped to [-1, 1] (what the Fourier encodings see)."""
        return normalise(beta_rate, self.max_rate), normalise(beta_vq, self.max_vq)

    def tensors(self, beta_rate: BetaLike, beta_vq: BetaLike, batch: int = 1,
                device: Union[str, torch.device, None] = None) -> Tuple[Tensor, Tensor]:
        """(B,) float32 tensors of both betas on ``device`` (floats or (B,)/(1,) tensors)."""
        return (as_beta_tensor(beta_rate, batch, "beta_rate", device),
                as_beta_tensor(beta_vq, batch, "beta_vq", device))

    def sample(self, n: int, per_sample: bool, device, use_selected: bool = False) -> Tuple[Tensor, Tensor]:
        """Training betas: one draw per sample (``per_sample``) or one for the batch, from the
        selected pairs or from the grid (beta_rate's level drawn first, then beta_vq's)."""
        draws = n if per_sample else 1
        if use_selected:
            if not self.selected:
                raise ValueError("use_selected_beta_pairs needs model.selected_beta_rate / selected_beta_vq")
            rates = torch.tensor([r for r, _ in self.selected]).float()
            vqs = torch.tensor([v for _, v in self.selected]).float()
            idx = torch.randint(0, len(rates), (draws,)).expand(n)
            return rates[idx].to(device), vqs[idx].to(device)
        out = []
        for max_beta in self.maxima:
            k = torch.randint(0, self.levels + 1, (draws,))
            out.append(self.level(k, max_beta).expand(n).contiguous().to(device))
        return out[0], out[1]

    def validation_points(self, use_selected: bool = False) -> List[Tuple[float, float, str]]:
        """(beta_rate, beta_vq, label): every selected pair, or the four corners of the range."""
        if use_selected:
            return [(r, v, f"_pair{i}") for i, (r, v) in enumerate(self.selected)]
        r, v = self.maxima
        return [(r, 0.0, "_rmax_vq0"), (r, v, "_rmax_vqmax"), (0.0, 0.0, "_r0_vq0"), (0.0, v, "_r0_vqmax")]

