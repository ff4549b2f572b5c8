"""Images <-> framed bitstreams with a DC-VIC model.

Sender::   image -> pad (reflect, multiple of 64) -> model.compress -> frame (header, strings, CRC)
Receiver:: frame -> verify (magic, version, CRC, lengths, fingerprint) -> model.decompress (entropy
           decoding on the CPU; large images in overlapping windows) -> crop -> image

The frame is verified completely before any string reaches compressai's decoder, so a
damaged file raises :class:`CorruptBitstreamError` instead of crashing the process.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor

from src.models.codec.bitstream import (CorruptBitstreamError, StreamHeader, model_fingerprint, pack_stream,
                                        stream_sizes, unpack_stream)
from src.utils.padding import crop_to, pad_to_multiple

PAD_MULTIPLE = 64


def as_float32(value: Optional[float]) -> float:
    """The float32 value the stream stores (encoder and decoder must condition on the same number)."""
    return float(torch.tensor(0.0 if value is None else float(value), dtype=torch.float32))


@dataclass
class EncodedImage:
    data: bytes
    header_bit: int
    z_bit: int
    y_bit: int
    num_pixels: int

    @property
    def real_bpp(self) -> float:
        return 8 * len(self.data) / self.num_pixels


class ImageCoder:
    """Code single images with ``model`` (the CompressAI contract: ``compress`` / ``decompress``).

    The model decodes images larger than its ``split_threshold`` in overlapping windows
    (``DCVIC.decode_split``), so the receiver's memory stays bounded.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu"):
        self.device = torch.device(device)
        model.eval()
        model.to("cpu")
        model.update(force=True)  # CDF tables built on the CPU: identical for every device
        self.model = model.to(self.device)
        self.fingerprint = model_fingerprint(model)
        self.num_strings = 1 + int(getattr(getattr(model, "context_model", None), "num_slices", 1))

    # ----------------------------------------------------------------------------- sender
    @torch.inference_mode()
    def encode(self, x: Tensor, beta_rate: Optional[float] = None, beta_vq: Optional[float] = None) -> EncodedImage:
        """``x``: (1, 3, H, W) in [-1, 1] -> framed stream."""
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"expected one RGB image of shape (1, 3, H, W), got {tuple(x.shape)}")
        H, W = x.shape[2:]
        br, bv = as_float32(beta_rate), as_float32(beta_vq)
        xp, _ = pad_to_multiple(x.to(self.device), PAD_MULTIPLE)
        enc = self.model.compress(xp, *self._betas(br, bv, xp.device))
        header = StreamHeader(height=H, width=W, beta_rate=br, beta_vq=bv, fingerprint=self.fingerprint)
        data = pack_stream(header, enc["strings"], enc["shape"])
        sizes = stream_sizes(data)
        return EncodedImage(data, sizes["header_bit"], sizes["z_bit"], sizes["y_bit"], H * W)

    # --------------------------------------------------------------------------- receiver
    def parse(self, data: bytes):
        header, strings, z_shape = unpack_stream(data, self.fingerprint)
        if len(strings) != self.num_strings:
            raise CorruptBitstreamError(f"stream holds {len(strings)} entropy strings; this model writes "
                                        f"{self.num_strings}")
        return header, strings, z_shape

    @torch.inference_mode()
    def decode(self, data: bytes) -> Tuple[Tensor, StreamHeader]:
        """Framed stream -> ((1, 3, H, W) in [-1, 1] on the CPU, header)."""
        header, strings, z_shape = self.parse(data)
        self._check_betas(header)
        betas = self._betas(header.beta_rate, header.beta_vq, self.device)
        x_hat = self.model.decompress([[s] for s in strings], z_shape, *betas)["x_hat"]
        if not torch.isfinite(x_hat).all():
            raise CorruptBitstreamError("decoding produced non-finite pixels")
        return crop_to(x_hat, header.height, header.width).cpu(), header

    # ---------------------------------------------------------------------------- helpers
    def _check_betas(self, header: StreamHeader) -> None:
        """Betas outside the range the model was trained on (or NaN) mean a damaged or forged stream."""
        if not getattr(self.model, "beta_cond", True):
            return
        decoder = getattr(self.model, "decoder", None)
        for name, value, embed in (("beta_rate", header.beta_rate, getattr(decoder, "embed_1", None)),
                                   ("beta_vq", header.beta_vq, getattr(decoder, "embed_2", None))):
            if embed is not None and not 0.0 <= value <= embed.max_beta:
                raise CorruptBitstreamError(f"the header's {name} {value} lies outside the model's "
                                            f"[0, {embed.max_beta}]")

    def _betas(self, beta_rate: float, beta_vq: float, device) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        if not getattr(self.model, "beta_cond", True):
            return None, None
        return (torch.tensor([beta_rate], dtype=torch.float32, device=device),
                torch.tensor([beta_vq], dtype=torch.float32, device=device))


def estimated_bits(model: torch.nn.Module, x: Tensor, beta_rate, beta_vq) -> Dict[str, float]:
    """The model's own estimate of z and y bits for ``x`` (rounded latents, padded like the coder)."""
    xp, _ = pad_to_multiple(x, PAD_MULTIPLE)
    with torch.inference_mode():
        device = next(model.parameters()).device
        xp = xp.to(device)
        br, bv = ((None, None) if not getattr(model, "beta_cond", True) else
                  (torch.tensor([as_float32(beta_rate)], device=device),
                   torch.tensor([as_float32(beta_vq)], device=device)))
        y = model.encode(xp, br, bv)["y"]
        lik = model.entropy(y, training=False)["likelihoods"]
    bits = {k: float(-torch.log2(v.double()).sum()) for k, v in lik.items()}
    return {"pred_z_bit": bits["z"], "pred_y_bit": bits["y"], "pred_bit": bits["z"] + bits["y"]}


# ---------------------------------------------------------------------------------- accounting
RANS_PRECISION = 16   # compressai's rANS: CDFs in 16-bit fixed point,
BYPASS_PRECISION = 4  # out-of-range values escape-coded in 4-bit chunks


@contextmanager
def _recording(entropy_models):
    """Record every ``encode_with_indexes`` call (symbols, indexes, CDF tables) of the models' coders."""
    records, saved = [], []
    for m in entropy_models:
        coder = m.entropy_coder
        original = coder.encode_with_indexes

        def record(*args, _original=original, _name=m):
            records.append((_name, args))
            return _original(*args)

        coder.encode_with_indexes = record
        saved.append((coder, original))
    try:
        yield records
    finally:
        for coder, original in saved:
            coder.encode_with_indexes = original


def _ideal_bits(symbols, indexes, cdfs, lengths, offsets) -> float:
    """Code length (bits) of these symbols under the coder's own quantised CDFs, escapes included."""
    s, i = torch.tensor(symbols, dtype=torch.long), torch.tensor(indexes, dtype=torch.long)
    cdf = torch.tensor(cdfs, dtype=torch.long)
    length, offset = torch.tensor(lengths, dtype=torch.long), torch.tensor(offsets, dtype=torch.long)
    v = s - offset[i]
    top = length[i] - 2
    low, high = v < 0, v >= top
    raw = torch.where(low, -2 * v - 1, torch.where(high, 2 * (v - top), torch.zeros_like(v)))
    v = torch.where(low | high, top, v)
    p = (cdf[i, v + 1] - cdf[i, v]).double() / 2 ** RANS_PRECISION
    bits = float(-torch.log2(p).sum())
    escaped = raw[low | high]
    if escaped.numel():
        chunks = torch.ceil(torch.log2(escaped.double() + 1) / BYPASS_PRECISION)
        bits += float((BYPASS_PRECISION * (chunks // 15 + 1 + chunks)).sum())
    return bits


def ideal_bits(model: torch.nn.Module, x: Tensor, beta_rate, beta_vq) -> Dict[str, float]:
    """The entropy of the exact symbols the coder writes, under the exact tables it uses.

    Real stream bits minus this is the rANS coder's own overhead (finite state, flushes);
    this minus the model's continuous estimate (:func:`estimated_bits`) is the cost of
    compressai's scale-table quantisation.
    """
    xp, _ = pad_to_multiple(x, PAD_MULTIPLE)
    device = next(model.parameters()).device
    br, bv = ((None, None) if not getattr(model, "beta_cond", True) else
              (torch.tensor([as_float32(beta_rate)], device=device), torch.tensor([as_float32(beta_vq)], device=device)))
    with _recording([model.entropy_model_z, model.entropy_model_y]) as records, torch.inference_mode():
        model.compress(xp.to(device), br, bv)
    bits = {"ideal_z_bit": 0.0, "ideal_y_bit": 0.0}
    for module, args in records:
        bits["ideal_z_bit" if module is model.entropy_model_z else "ideal_y_bit"] += _ideal_bits(*args)
    return bits
