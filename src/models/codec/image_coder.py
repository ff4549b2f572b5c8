"""Images <-> framed bitstreams with a DC-VIC model.

Sender::   image -> pad (reflect, multiple of 64) -> model.compress -> frame (header, strings, CRC)
Receiver:: frame -> verify (magic, version, CRC, lengths, fingerprint) -> model.decompress (entropy
           decoding on the CPU; large images in overlapping windows) -> crop -> image

The frame is verified completely before any entropy decoding, and then each string's length
against the symbols it must yield; the strings are decoded by the bounds-checked decoder of
:mod:`src.models.codec.rans_guard` (compressai's own reads past a forged string). So a damaged or
forged file raises :class:`CorruptBitstreamError` instead of crashing the process. Declared
image sides above :data:`MAX_DECODE_SIDE` are refused too (``ImageCoder(max_side=...)`` raises it).
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from src.models.codec.bitstream import (MAX_IMAGE_SIDE, CorruptBitstreamError, EntropyDesyncError, StreamHeader,
                                        latent_check, model_fingerprint, pack_stream, stream_sizes,
                                        unpack_stream)
from src.models.codec.rans_guard import (check_string_size, cheapest_symbol_bits, guard_entropy_coders,
                                         min_string_bytes)
from src.utils.padding import crop_to, pad_to_multiple

PAD_MULTIPLE = 64
#: Largest image side (pixels) the decoder accepts by default. A stream declaring more is refused
#: before anything is allocated for it (decoding memory and time grow with the declared area).
#: ``ImageCoder(model, max_side=...)`` or ``scripts/decompress.py --max_side`` raises it (up to the
#: format's own limit, :data:`src.models.codec.bitstream.MAX_IMAGE_SIDE`).
MAX_DECODE_SIDE = 16384
#: y lies on a grid 4 times finer than z (h_a downsamples by 4)
Y_PER_Z = 4


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

    Args:
        model: the codec; its entropy models get the bounds-checked rANS decoder
            (:func:`~src.models.codec.rans_guard.guard_entropy_coders`).
        device: where the networks run (entropy coding is on the CPU).
        max_side: largest image height or width a stream may declare (:data:`MAX_DECODE_SIDE`).
        rebuild_tables: rebuild the entropy coder's tables from the weights (training-time
            validation, where the weights change). By default the tables stored with the
            model are used as they are and only missing ones are built: tables rebuilt on
            another machine can differ in their last bits (CPU kernels), and the stream's
            fingerprint covers them.
    """

    def __init__(self, model: torch.nn.Module, device: str = "cpu", max_side: int = MAX_DECODE_SIDE,
                 rebuild_tables: bool = False):
        if not (isinstance(max_side, int) and 1 <= max_side <= MAX_IMAGE_SIDE):
            raise ValueError(f"max_side must be an integer in [1, {MAX_IMAGE_SIDE}], got {max_side!r}")
        self.device = torch.device(device)
        self.max_side = max_side
        model.eval()
        model.to("cpu")
        model.update(force=rebuild_tables)  # built on the CPU when missing
        guard_entropy_coders(model.modules())
        self.model = model.to(self.device)
        self.fingerprint = model_fingerprint(model)
        self.num_strings = 1 + int(getattr(getattr(model, "context_model", None), "num_slices", 1))
        self._symbol_bits = _cheapest_bits(model)

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
        check = latent_check(enc["y_hat"]) if "y_hat" in enc else 0
        header = StreamHeader(height=H, width=W, beta_rate=br, beta_vq=bv, fingerprint=self.fingerprint,
                              latent_check=check)
        data = pack_stream(header, enc["strings"], enc["shape"])
        sizes = stream_sizes(data)
        return EncodedImage(data, sizes["header_bit"], sizes["z_bit"], sizes["y_bit"], H * W)

    # --------------------------------------------------------------------------- receiver
    def parse(self, data: bytes):
        """Verify a stream without decoding it: frame, model, image size, string lengths.

        Raises :class:`CorruptBitstreamError` for a stream this coder must not decode, before
        anything sized by the header is allocated.
        """
        header, strings, z_shape = unpack_stream(data, self.fingerprint)
        if len(strings) != self.num_strings:
            raise CorruptBitstreamError(f"stream holds {len(strings)} entropy strings; this model writes "
                                        f"{self.num_strings}")
        self._check_size(header)
        self._check_string_lengths(strings, z_shape)
        return header, strings, z_shape

    @torch.inference_mode()
    def decode(self, data: bytes) -> Tuple[Tensor, StreamHeader]:
        """Framed stream -> ((1, 3, H, W) in [-1, 1] on the CPU, header)."""
        header, strings, z_shape = self.parse(data)
        self._check_betas(header)
        betas = self._betas(header.beta_rate, header.beta_vq, self.device)
        # the frame passed its CRC and fingerprint checks, so the bytes are as written
        cause = ("Either the stream was forged with a valid CRC, or this receiver computes the entropy "
                 "parameters differently from the sender (the model's exact integer arithmetic rules out "
                 "other CPU kernels, thread counts or devices; a modified model or a bug does not); "
                 "no image is written")
        try:
            out = self.model.decompress([[s] for s in strings], z_shape, *betas)
        except CorruptBitstreamError as err:
            raise EntropyDesyncError(f"entropy decoding failed on an intact stream of this model ({err}): "
                                     f"the rANS decoder lost step with the encoder. {cause}") from err
        if header.latent_check and "y_hat" in out and latent_check(out["y_hat"]) != header.latent_check:
            raise EntropyDesyncError(
                f"the decoded latent fails the stream's check value ({latent_check(out['y_hat']):08x}, "
                f"the sender's {header.latent_check:08x}): the rANS decoder lost step with the encoder. {cause}")
        x_hat = out["x_hat"]
        if not torch.isfinite(x_hat).all():
            raise CorruptBitstreamError("decoding produced non-finite pixels")
        return crop_to(x_hat, header.height, header.width).cpu(), header

    # ---------------------------------------------------------------------------- helpers
    def _check_size(self, header: StreamHeader) -> None:
        if max(header.height, header.width) > self.max_side:
            raise CorruptBitstreamError(
                f"the header declares a {header.height}x{header.width} image; this decoder accepts sides up "
                f"to {self.max_side} px (raise it with ImageCoder(max_side=...) or decompress.py --max_side)")

    def _check_string_lengths(self, strings, z_shape: Tuple[int, int]) -> None:
        """Each string must be long enough to code the symbols the header implies (see rans_guard)."""
        for i, s in enumerate(strings):
            what = "string 0 (z)" if i == 0 else f"string {i} (y slice {i - 1})"
            check_string_size(s, what)
            if self._symbol_bits is None:
                continue
            n, bits = self._symbol_budget(i, z_shape)
            need = min_string_bytes(bits, n)
            if len(s) < need:
                raise CorruptBitstreamError(f"{what} holds {len(s)} bytes; its {n} symbols need at least {need} "
                                            f"(stream truncated or forged)")

    def _symbol_budget(self, i: int, z_shape: Tuple[int, int]) -> Tuple[int, float]:
        """(number of symbols of string ``i``, the fewest bits they can cost) for a z of ``z_shape``."""
        z_bits, y_bits, slice_ch = self._symbol_bits
        zh, zw = z_shape
        if i == 0:
            return len(z_bits) * zh * zw, zh * zw * sum(z_bits)
        n = slice_ch * (Y_PER_Z * zh) * (Y_PER_Z * zw)
        return n, n * y_bits

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


def _cheapest_bits(model: torch.nn.Module) -> Optional[Tuple[List[float], float, int]]:
    """(cheapest bits per z channel, cheapest bits of any y symbol, channels per y slice), from the
    model's CDF tables; None for a model without DC-VIC's z / ChARM-sliced y layout."""
    ez, ey = getattr(model, "entropy_model_z", None), getattr(model, "entropy_model_y", None)
    slice_ch = getattr(getattr(model, "context_model", None), "slice_ch", None)
    if ez is None or ey is None or slice_ch is None:
        return None
    z_bits = cheapest_symbol_bits(ez._quantized_cdf.tolist(), ez._cdf_length.tolist())
    y_bits = cheapest_symbol_bits(ey._quantized_cdf.tolist(), ey._cdf_length.tolist())
    return z_bits, min(y_bits), int(slice_ch)


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
