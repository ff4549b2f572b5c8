"""Images <-> framed bitstreams with a DC-VIC model.

Sender::   image -> pad (reflect, multiple of 64) -> model.compress -> frame (header, check value,
           one rANS string; :mod:`src.models.codec.bitstream`)
Receiver:: frame -> verify (tag, version, fingerprint, image size, betas, string length) ->
           model.decompress (entropy decoding on the CPU; large images in overlapping windows)
           -> verify the check value -> crop -> image

Everything the header declares is checked before any entropy decoding, and the string's length
against the symbols it must yield; the string is decoded by the bounds-checked decoder of
:mod:`src.models.codec.rans_guard` (compressai's own reads past a forged string), and the decoded
y_hat must match the stream's check value. So a damaged or forged file raises
:class:`CorruptBitstreamError` instead of crashing the process or writing a wrong image. Declared
image sides above :data:`MAX_DECODE_SIDE` are refused too (``ImageCoder(max_side=...)`` raises it).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch
from torch import Tensor

from src.models.codec.betas import BetaSpace, as_float32
from src.models.codec.bitstream import (BETAS_NONE, BETAS_QUALITY, HEADER_FINGERPRINT_BYTES, MAX_IMAGE_SIDE,
                                        CorruptBitstreamError, StreamCheckError, StreamHeader, check_prefix,
                                        expected_z_shape, header_bytes, model_fingerprint, pack_stream,
                                        stream_check, stream_sizes, unpack_stream)
from src.models.codec.rans_guard import check_string_size, cheapest_symbol_bits, min_string_bytes
from src.models.entropy.rate import bits as entropy_bits
from src.utils.padding import crop_to, pad_to_multiple

PAD_MULTIPLE = 64
#: Largest image side (pixels) the decoder accepts by default. A stream declaring more is refused
#: before anything is allocated for it (decoding memory and time grow with the declared area).
#: ``ImageCoder(model, max_side=...)`` or ``scripts/decompress.py --max_side`` raises it (up to the
#: format's own limit, :data:`src.models.codec.bitstream.MAX_IMAGE_SIDE`).
MAX_DECODE_SIDE = 16384
#: y lies on a grid 4 times finer than z (h_a downsamples by 4)
Y_PER_Z = 4


@dataclass
class EncodedImage:
    data: bytes
    header_bit: int
    z_bit: int
    y_bit: int
    num_pixels: int
    #: the model's estimate for this image (``pred_z_bit``, ``pred_y_bit``, ``pred_bit``), from the
    #: encoding pass itself, when ``encode(..., estimate=True)``
    predicted: Optional[Dict[str, float]] = None

    @property
    def real_bpp(self) -> float:
        return 8 * len(self.data) / self.num_pixels


class ImageCoder:
    """Code single images with ``model`` (the CompressAI contract: ``compress`` / ``decompress``).

    The model decodes images larger than its ``split_threshold`` in overlapping windows
    (``DCVIC.decode_split``), so the receiver's memory stays bounded.

    Args:
        model: the codec (DC-VIC: ``compress`` / ``decompress`` of one rANS string per image).
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
        self.model = model.to(self.device)
        self.fingerprint = model_fingerprint(model)
        self._symbol_bits = _cheapest_bits(model)
        self._conditioned = bool(getattr(model, "beta_cond", True))
        #: the model's betas: quality indexes point into its selected pairs (as float32)
        self.beta_space: BetaSpace = getattr(model, "beta_space", None) or BetaSpace()

    # ----------------------------------------------------------------------------- sender
    @torch.inference_mode()
    def encode(self, x: Tensor, beta_rate: Optional[float] = None, beta_vq: Optional[float] = None,
               estimate: bool = False) -> EncodedImage:
        """``x``: (1, 3, H, W) in [-1, 1] -> framed stream. Betas equal (as float32) to one of the
        model's selected pairs are sent as its quality index, others as two float32 values.
        ``estimate`` also returns the model's bit estimate of the same latents (no second pass)."""
        if x.ndim != 4 or x.shape[0] != 1 or x.shape[1] != 3:
            raise ValueError(f"expected one RGB image of shape (1, 3, H, W), got {tuple(x.shape)}")
        H, W = x.shape[2:]
        if self._conditioned:
            br, bv = as_float32(beta_rate), as_float32(beta_vq)
            quality = self.beta_space.quality_of(br, bv)
        else:
            br = bv = quality = None
        xp, _ = pad_to_multiple(x.to(self.device), PAD_MULTIPLE)
        enc = self.model.compress(xp, *self._betas(br, bv, xp.device), **({"estimate": True} if estimate else {}))
        header = StreamHeader(height=H, width=W, beta_rate=None if quality is not None else br,
                              beta_vq=None if quality is not None else bv, quality=quality,
                              fingerprint=self.fingerprint[:HEADER_FINGERPRINT_BYTES])
        check = stream_check(header_bytes(header), self.fingerprint, br, bv, enc["y_hat"])
        data = pack_stream(dataclasses.replace(header, check=check), enc["strings"][0][0])
        sizes = stream_sizes(data)
        # z and y share one string: z's part is the code length of its symbols under the coder's tables
        z_bit = min(round(enc["ideal_bits"][0]["z"]), sizes["payload_bit"])
        predicted = predicted_bits(enc["estimated_bits"][0]) if estimate else None
        return EncodedImage(data, sizes["header_bit"], z_bit, sizes["payload_bit"] - z_bit, H * W, predicted)

    # --------------------------------------------------------------------------- receiver
    def parse(self, data: bytes) -> Tuple[StreamHeader, bytes]:
        """Verify a stream's frame without decoding it: format, model, image size, betas, the
        payload's length. -> ``(header, payload)``, the header's betas resolved.

        Raises :class:`CorruptBitstreamError` for a stream this coder must not decode, before
        anything sized by the header is allocated.
        """
        header, payload = unpack_stream(data, self.fingerprint)
        self._check_size(header)
        header = self._resolve_betas(header)
        self._check_betas(header)
        self._check_payload(payload, expected_z_shape(header.height, header.width))
        return header, payload

    @torch.inference_mode()
    def decode_latent(self, data: bytes) -> Tuple[StreamHeader, Tensor]:
        """Framed stream -> (header, y_hat on the CPU), the check value verified: the entropy
        decoding alone, without the image."""
        header, payload = self.parse(data)
        z_shape = expected_z_shape(header.height, header.width)
        try:
            y_hat = self.model.decompress_latent([[payload]], z_shape)
        except CorruptBitstreamError as err:
            raise CorruptBitstreamError(f"entropy decoding failed ({err}): the stream is truncated, damaged or "
                                        "forged; no image is written") from err
        check = stream_check(check_prefix(data), self.fingerprint, header.beta_rate, header.beta_vq, y_hat)
        if check != header.check:
            raise StreamCheckError(
                f"the decoded stream fails its check value ({check:08x}, the sender's {header.check:08x}): the "
                "file was damaged or forged, or this receiver decodes differently from the sender (the exact "
                "integer entropy parameters rule out other CPU kernels, thread counts and devices; other "
                "selected beta pairs for a quality index, a modified model or a bug do not); no image is written")
        return header, y_hat

    @torch.inference_mode()
    def decode(self, data: bytes) -> Tuple[Tensor, StreamHeader]:
        """Framed stream -> ((1, 3, H, W) in [-1, 1] on the CPU, header)."""
        header, y_hat = self.decode_latent(data)
        betas = self._betas(header.beta_rate, header.beta_vq, self.device)
        x_hat = self.model.reconstruct(y_hat, *betas)
        if not torch.isfinite(x_hat).all():
            raise CorruptBitstreamError("decoding produced non-finite pixels")
        return crop_to(x_hat, header.height, header.width).cpu(), header

    # ---------------------------------------------------------------------------- helpers
    def _check_size(self, header: StreamHeader) -> None:
        if max(header.height, header.width) > self.max_side:
            raise CorruptBitstreamError(
                f"the header declares a {header.height}x{header.width} image; this decoder accepts sides up "
                f"to {self.max_side} px (raise it with ImageCoder(max_side=...) or decompress.py --max_side)")

    def _resolve_betas(self, header: StreamHeader) -> StreamHeader:
        """The betas the decoder conditions on: a quality index looked up in the model's pairs."""
        if not self._conditioned:
            if header.beta_mode != BETAS_NONE:
                raise CorruptBitstreamError("the stream carries betas; this model is not beta-conditioned")
            return header
        if header.beta_mode == BETAS_NONE:
            raise CorruptBitstreamError("the stream carries no betas; this model is beta-conditioned")
        if header.beta_mode == BETAS_QUALITY:
            pairs = self.beta_space.selected_float32
            if header.quality >= len(pairs):
                raise CorruptBitstreamError(
                    f"the stream names quality index {header.quality}; this model has {len(pairs)} selected "
                    "beta pairs (load it with the config that defines model.selected_beta_rate / selected_beta_vq)")
            br, bv = pairs[header.quality]
            return dataclasses.replace(header, beta_rate=br, beta_vq=bv)
        return header

    def _check_payload(self, payload: bytes, z_shape: Tuple[int, int]) -> None:
        """The string must be long enough to code the symbols the header implies (see rans_guard)."""
        check_string_size(payload, "the stream's rANS string")
        if self._symbol_bits is None:
            return
        z_bits, y_bits, channels = self._symbol_bits
        zh, zw = z_shape
        n_z, n_y = len(z_bits) * zh * zw, channels * (Y_PER_Z * zh) * (Y_PER_Z * zw)
        need = min_string_bytes(zh * zw * sum(z_bits) + n_y * y_bits, n_z + n_y)
        if len(payload) < need:
            raise CorruptBitstreamError(f"the stream's rANS string holds {len(payload)} bytes; its {n_z + n_y} "
                                        f"symbols need at least {need} (stream truncated or forged)")

    def _check_betas(self, header: StreamHeader) -> None:
        """Betas outside the range the model was trained on (or NaN) mean a damaged or forged stream."""
        if not self._conditioned:
            return
        for name, value, top in (("beta_rate", header.beta_rate, self.beta_space.max_rate),
                                 ("beta_vq", header.beta_vq, self.beta_space.max_vq)):
            if not 0.0 <= value <= top:
                raise CorruptBitstreamError(f"the header's {name} {value} lies outside the model's [0, {top}]")

    def _betas(self, beta_rate: float, beta_vq: float, device) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        return model_betas(self.model, beta_rate, beta_vq, device)


def _cheapest_bits(model: torch.nn.Module) -> Optional[Tuple[List[float], float, int]]:
    """(cheapest bits per z channel, cheapest bits of any y symbol, channels of y), from the
    model's CDF tables; None for a model without DC-VIC's z / ChARM-sliced y layout."""
    ez, ey = getattr(model, "entropy_model_z", None), getattr(model, "entropy_model_y", None)
    cm = getattr(model, "context_model", None)
    if ez is None or ey is None or cm is None:
        return None
    z_bits = cheapest_symbol_bits(ez._quantized_cdf.tolist(), ez._cdf_length.tolist())
    y_bits = cheapest_symbol_bits(ey._quantized_cdf.tolist(), ey._cdf_length.tolist())
    return z_bits, min(y_bits), int(cm.slice_ch * cm.num_slices)


def model_betas(model: torch.nn.Module, beta_rate, beta_vq, device) -> Tuple[Optional[Tensor], Optional[Tensor]]:
    """(1,) float32 beta tensors on ``device`` from the model's beta space; (None, None) for an
    unconditioned model."""
    if not getattr(model, "beta_cond", True):
        return None, None
    space = getattr(model, "beta_space", None) or BetaSpace()
    return space.tensors(as_float32(beta_rate), as_float32(beta_vq), 1, device)


def estimated_bits(model: torch.nn.Module, x: Tensor, beta_rate, beta_vq) -> Dict[str, float]:
    """The model's own estimate of z and y bits for ``x`` (rounded latents, padded like the coder)."""
    xp, _ = pad_to_multiple(x, PAD_MULTIPLE)
    with torch.inference_mode():
        device = next(model.parameters()).device
        xp = xp.to(device)
        y = model.encode(xp, *model_betas(model, beta_rate, beta_vq, device))["y"]
        lik = model.entropy(y, training=False)["likelihoods"]
    return predicted_bits({k: float(entropy_bits(v.double()).sum()) for k, v in lik.items()})


def predicted_bits(bits: Dict[str, float]) -> Dict[str, float]:
    """One image's estimated ``{"z", "y"}`` bits -> ``{"pred_z_bit", "pred_y_bit", "pred_bit"}``."""
    return {"pred_z_bit": bits["z"], "pred_y_bit": bits["y"], "pred_bit": bits["z"] + bits["y"]}


def ideal_bits(model: torch.nn.Module, x: Tensor, beta_rate, beta_vq) -> Dict[str, float]:
    """The entropy of the exact symbols the coder writes, under the exact tables it uses.

    Real stream bits minus this is the rANS coder's own overhead (finite state, flush);
    this minus the model's continuous estimate (:func:`estimated_bits`) is the cost of
    compressai's scale-table quantisation.
    """
    xp, _ = pad_to_multiple(x, PAD_MULTIPLE)
    device = next(model.parameters()).device
    with torch.inference_mode():
        bits = model.compress(xp.to(device), *model_betas(model, beta_rate, beta_vq, device))["ideal_bits"][0]
    return {"ideal_z_bit": bits["z"], "ideal_y_bit": bits["y"]}
