"""One compressed image per file: a compact header, then one rANS string.

Layout (integers big-endian, varints LEB128: 7 bits a byte, low bits first)::

    size   field
    1      tag          0xD0 | version << 2 | beta mode: magic nibble 0xD, format version
                        (:data:`FORMAT_VERSION`), how the betas are sent (below)
    1-3    height       varint, image height before padding (1 .. MAX_IMAGE_SIDE)
    1-3    width        varint
    0/1/8  betas        mode 0: none (unconditioned model); mode 1: a quality index (u8) into
                        the model's selected (beta_rate, beta_vq) pairs; mode 2: the float32
                        pair the encoder conditioned on
    2      fingerprint  first 2 bytes of the model's :func:`model_fingerprint`
    4      check        CRC-32 over the header bytes before it, the whole 8-byte model
                        fingerprint, the betas (float32) and the decoded y_hat (float32)
    rest   payload      one rANS string: z, then the y slices (:mod:`src.models.codec.symbols`)

A Kodak-sized (768x512) image costs 12 bytes (96 bits) of header with a quality index and
19 bytes (152 bits) with explicit betas; sides of 16384 px and more take one byte more each.

What each check catches:

* tag: a file that is not a stream of this format (the older 4-byte ``DCVC`` frames are named);
* fingerprint: a stream of another model, at the first 2 bytes (a foreign stream passes it with
  odds 2**-16, and then fails the check value, which covers the whole fingerprint);
* the payload's length rules and the bounds-checked rANS decoder (:mod:`~src.models.codec.rans_guard`):
  a truncated or padded string, a string too short for its symbols;
* the check value, after decoding: any change of the header or the payload (a bit flip, a
  forgery), and a receiver that decodes a different y_hat or resolves the quality index to other
  betas than the sender's; a damaged stream passes it with odds 2**-32.

:func:`unpack_stream` raises :class:`CorruptBitstreamError` (a ``ValueError``) for every
malformed input and no other exception.
"""
from __future__ import annotations

import hashlib
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

TAG_MAGIC = 0xD0
FORMAT_VERSION = 3
FINGERPRINT_BYTES = 8            # model_fingerprint's length; the check value covers all of it
HEADER_FINGERPRINT_BYTES = 2     # what the header stores
#: Largest image side the format allows; larger values are treated as corruption. Decoders
#: accept less by default (``ImageCoder``'s ``max_side``, ``image_coder.MAX_DECODE_SIDE``).
MAX_IMAGE_SIDE = 1 << 20
BETAS_NONE, BETAS_QUALITY, BETAS_FLOAT32 = 0, 1, 2
_BETAS = struct.Struct(">ff")
_CHECK = struct.Struct(">I")
#: an rANS string holds at least its flushed 64-bit state
MIN_PAYLOAD_BYTES = 8
#: fewest bytes of a valid stream: tag, two 1-byte sides, fingerprint, check, payload
MIN_STREAM_BYTES = 1 + 2 + HEADER_FINGERPRINT_BYTES + _CHECK.size + MIN_PAYLOAD_BYTES


class CorruptBitstreamError(ValueError):
    """The bytes are not a valid stream for this format (or for this model)."""


class StreamCheckError(CorruptBitstreamError):
    """A stream of this model decoded to a y_hat (or betas) that fail its check value: the file was
    damaged or forged, or this receiver decodes differently from the sender."""


@dataclass(frozen=True)
class StreamHeader:
    """Typed header of one stream.

    Attributes:
        height, width: size of the original (unpadded) image in pixels.
        beta_rate, beta_vq: the betas the decoder conditions on, as float32 values; with a
            quality index they are resolved from the model's pairs by the reader
            (``ImageCoder.parse``); None for an unconditioned model.
        quality: index into the model's selected pairs, when the betas are sent that way.
        fingerprint: :data:`HEADER_FINGERPRINT_BYTES` bytes (the start of :func:`model_fingerprint`).
        check: :func:`stream_check` of the stream (set by the writer).
        version: format version (set by the writer; checked by the reader).
    """

    height: int
    width: int
    beta_rate: Optional[float] = None
    beta_vq: Optional[float] = None
    quality: Optional[int] = None
    fingerprint: bytes = bytes(HEADER_FINGERPRINT_BYTES)
    check: int = 0
    version: int = FORMAT_VERSION

    @property
    def beta_mode(self) -> int:
        if self.quality is not None:
            return BETAS_QUALITY
        return BETAS_NONE if self.beta_rate is None and self.beta_vq is None else BETAS_FLOAT32


# --------------------------------------------------------------------------- fingerprint
def model_fingerprint(module_or_state_dict: Any, prefixes: Optional[Sequence[str]] = None) -> bytes:
    """Short, deterministic identity of a model's weights.

    SHA-256 over the state dict entries in sorted-name order; for each tensor the
    name, dtype, shape and raw little-endian bytes are hashed. Floating tensors
    are first cast to float32 on the CPU (so the device does not matter); integer
    and bool tensors (e.g. compressai's quantised CDF tables) are hashed as they
    are. Non-tensor entries are skipped. Call it after ``update()``, since the
    CDF tables are part of what the decoder needs to agree on.

    Args:
        module_or_state_dict: an ``nn.Module`` or a mapping name -> tensor.
        prefixes: if given, only names starting with one of these are hashed
            (e.g. the entropy-model-relevant sub-modules).

    Returns:
        The first :data:`FINGERPRINT_BYTES` bytes of the digest (the header stores
        :data:`HEADER_FINGERPRINT_BYTES` of them).
    """
    import torch  # local import: the framing code itself needs no torch

    sd = module_or_state_dict
    if hasattr(sd, "state_dict") and callable(sd.state_dict):
        sd = sd.state_dict()
    if not isinstance(sd, Mapping):
        raise TypeError(f"expected an nn.Module or a state dict, got {type(module_or_state_dict).__name__}")
    h = hashlib.sha256()
    for name in sorted(sd):
        t = sd[name]
        if not isinstance(t, torch.Tensor):
            continue
        if prefixes is not None and not any(name.startswith(p) for p in prefixes):
            continue
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32)
        arr = t.contiguous().numpy()
        arr = arr.astype(arr.dtype.newbyteorder("<"), copy=False)
        h.update(name.encode("utf-8") + b"\0")
        h.update(str(arr.dtype).encode("ascii") + b"\0")
        h.update(struct.pack(f">{arr.ndim + 1}Q", arr.ndim, *arr.shape))
        h.update(arr.tobytes())
    return h.digest()[:FINGERPRINT_BYTES]


# --------------------------------------------------------------------------- shape rule
def expected_z_shape(height: int, width: int, factor: int = 64, rounding: str = "ceil") -> Tuple[int, int]:
    """Spatial shape of z for an image of ``height x width``.

    ``factor`` is the total downsampling from the image to z (DC-VIC: 16 for y,
    then 4 more in the hyper-encoder, so 64). ``rounding`` is the padding rule:

    * ``"ceil"``: the image is padded bottom/right to a multiple of ``factor``
      before encoding (what DC-VIC does); z is ``ceil(H/factor) x ceil(W/factor)``.
      A chain of stride-2 convolutions with "same" padding gives the same shape.
    * ``"floor"``: the image is cropped to a multiple of ``factor``.
    """
    if rounding == "ceil":
        return -(-height // factor), -(-width // factor)
    if rounding == "floor":
        return height // factor, width // factor
    raise ValueError(f"rounding must be 'ceil' or 'floor', got {rounding!r}")


# --------------------------------------------------------------------------- varints
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _read_varint(data: bytes, pos: int, what: str) -> Tuple[int, int]:
    value = shift = 0
    for i in range(3):                        # MAX_IMAGE_SIDE needs 21 bits: 3 bytes
        if pos + i >= len(data):
            raise CorruptBitstreamError(f"stream ends inside the {what} field")
        byte = data[pos + i]
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            if i and not byte:
                raise CorruptBitstreamError(f"{what} field is not in its shortest form")
            return value, pos + i + 1
    raise CorruptBitstreamError(f"{what} field runs over 3 bytes (sides go up to {MAX_IMAGE_SIDE})")


# --------------------------------------------------------------------------- writing
def header_bytes(header: StreamHeader) -> bytes:
    """The header's bytes up to (not including) the check value."""
    if not (1 <= header.height <= MAX_IMAGE_SIDE and 1 <= header.width <= MAX_IMAGE_SIDE):
        raise ValueError(f"image size {header.height}x{header.width} outside 1..{MAX_IMAGE_SIDE}")
    if len(header.fingerprint) != HEADER_FINGERPRINT_BYTES:
        raise ValueError(f"the header's fingerprint must be {HEADER_FINGERPRINT_BYTES} bytes, "
                         f"got {len(header.fingerprint)}")
    mode = header.beta_mode
    parts = [bytes([TAG_MAGIC | FORMAT_VERSION << 2 | mode]), _varint(header.height), _varint(header.width)]
    if mode == BETAS_QUALITY:
        if not 0 <= header.quality <= 0xFF:
            raise ValueError(f"quality index must be in 0..255, got {header.quality}")
        parts.append(bytes([header.quality]))
    elif mode == BETAS_FLOAT32:
        if header.beta_rate is None or header.beta_vq is None:
            raise ValueError("give both betas or neither")
        parts.append(_BETAS.pack(header.beta_rate, header.beta_vq))
    return b"".join(parts) + bytes(header.fingerprint)


def stream_check(prefix: bytes, fingerprint: bytes, beta_rate: Optional[float], beta_vq: Optional[float],
                 y_hat: Any) -> int:
    """The check value: CRC-32 over the header bytes ``prefix`` (:func:`header_bytes`), the whole
    model ``fingerprint``, the betas the decoder conditions on (float32; zeros for none) and the
    decoded ``y_hat`` (a tensor, as little-endian float32)."""
    if len(fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(fingerprint)}")
    crc = zlib.crc32(prefix)
    crc = zlib.crc32(bytes(fingerprint), crc)
    crc = zlib.crc32(_BETAS.pack(beta_rate or 0.0, beta_vq or 0.0), crc)
    arr = y_hat.detach().cpu().float().contiguous().numpy()
    return zlib.crc32(arr.astype("<f4", copy=False).tobytes(), crc)


def pack_stream(header: StreamHeader, payload: bytes) -> bytes:
    """Frame one image's rANS string (see the module docstring); ``header.check`` as computed
    by :func:`stream_check`."""
    if not isinstance(payload, (bytes, bytearray)):
        raise TypeError(f"payload is {type(payload).__name__}, expected bytes")
    if not 0 <= header.check <= 0xFFFFFFFF:
        raise ValueError(f"check must be a u32, got {header.check}")
    return header_bytes(header) + _CHECK.pack(header.check) + bytes(payload)


def write_stream(path: Union[str, os.PathLike], header: StreamHeader, payload: bytes) -> int:
    """Write a framed stream to ``path``; returns the number of bytes written."""
    data = pack_stream(header, payload)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


# --------------------------------------------------------------------------- reading
def _parse(data: bytes) -> Tuple[StreamHeader, int, bytes]:
    """-> (header, length of the header bytes before the check, payload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] == b"DCVC":
        raise CorruptBitstreamError(
            f"a stream of an earlier format (version {data[4] if len(data) > 4 else '?'}: per-slice strings, "
            "float32 entropy parameters that another machine may not reproduce); this reader reads format "
            f"{FORMAT_VERSION}: re-encode the image")
    if len(data) < MIN_STREAM_BYTES:
        raise CorruptBitstreamError(
            f"stream too short: {len(data)} bytes, a valid stream has at least {MIN_STREAM_BYTES}")
    tag = data[0]
    if tag & 0xF0 != TAG_MAGIC:
        raise CorruptBitstreamError(f"bad tag byte {tag:#04x} (not a DC-VIC stream)")
    version, mode = tag >> 2 & 0x3, tag & 0x3
    if version != FORMAT_VERSION:
        raise CorruptBitstreamError(f"unsupported format version {version} (this reader reads {FORMAT_VERSION})")
    if mode not in (BETAS_NONE, BETAS_QUALITY, BETAS_FLOAT32):
        raise CorruptBitstreamError(f"unknown beta mode {mode} in the tag byte")
    height, pos = _read_varint(data, 1, "height")
    width, pos = _read_varint(data, pos, "width")
    if not (1 <= height <= MAX_IMAGE_SIDE and 1 <= width <= MAX_IMAGE_SIDE):
        raise CorruptBitstreamError(f"image size {height}x{width} outside 1..{MAX_IMAGE_SIDE}")
    beta_rate = beta_vq = quality = None
    if mode == BETAS_QUALITY:
        quality, pos = data[pos] if pos < len(data) else None, pos + 1
    elif mode == BETAS_FLOAT32:
        if pos + _BETAS.size <= len(data):
            beta_rate, beta_vq = _BETAS.unpack_from(data, pos)
        pos += _BETAS.size
    fp_end = pos + HEADER_FINGERPRINT_BYTES
    if fp_end + _CHECK.size + MIN_PAYLOAD_BYTES > len(data):
        raise CorruptBitstreamError(f"stream too short: {len(data)} bytes, its header alone ends at byte "
                                    f"{fp_end + _CHECK.size} and a string holds at least {MIN_PAYLOAD_BYTES}")
    (check,) = _CHECK.unpack_from(data, fp_end)
    header = StreamHeader(height, width, beta_rate, beta_vq, quality, data[pos:fp_end], check, version)
    return header, fp_end, data[fp_end + _CHECK.size:]


def unpack_stream(data: bytes, expected_fingerprint: Optional[bytes] = None) -> Tuple[StreamHeader, bytes]:
    """Read the frame of a stream: -> ``(header, payload)``.

    ``expected_fingerprint`` (the decoding model's :func:`model_fingerprint`): a stream whose
    header names another model is refused. The check value can only be verified after decoding
    (:func:`stream_check`; ``ImageCoder.decode`` does it).

    Raises:
        CorruptBitstreamError: for any malformed frame, with the reason.
    """
    header, _, payload = _parse(data)
    if header.beta_mode == BETAS_FLOAT32 and not all(map(_finite, (header.beta_rate, header.beta_vq))):
        raise CorruptBitstreamError(
            f"non-finite coding parameters beta_rate={header.beta_rate}, beta_vq={header.beta_vq}")
    if expected_fingerprint is not None and \
            header.fingerprint != bytes(expected_fingerprint)[:HEADER_FINGERPRINT_BYTES]:
        raise CorruptBitstreamError(
            f"stream was made by a different model: fingerprint {header.fingerprint.hex()}, this model "
            f"{bytes(expected_fingerprint)[:HEADER_FINGERPRINT_BYTES].hex()} (its first {HEADER_FINGERPRINT_BYTES} "
            "bytes)")
    return header, payload


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def check_prefix(data: bytes) -> bytes:
    """The header bytes of a stream that its check value covers (everything before it)."""
    return bytes(data)[:_parse(data)[1]]


def read_stream(path: Union[str, os.PathLike], expected_fingerprint: Optional[bytes] = None
                ) -> Tuple[StreamHeader, bytes]:
    """Read and verify the frame of a stream file (see :func:`unpack_stream`)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return unpack_stream(data, expected_fingerprint)
    except CorruptBitstreamError as e:
        raise CorruptBitstreamError(f"{os.fspath(path)}: {e}") from None


# --------------------------------------------------------------------------- sizes
def stream_sizes(data: bytes) -> Dict[str, int]:
    """Bits of a stream: ``header_bit`` (everything before the payload, the check included),
    ``payload_bit`` (the rANS string) and ``total_bit``."""
    header, end, payload = _parse(data)
    total = 8 * len(data)
    return {"header_bit": total - 8 * len(payload), "payload_bit": 8 * len(payload), "total_bit": total}


def header_bits(data: bytes) -> int:
    """Framing overhead of a stream in bits (everything except the rANS string)."""
    return stream_sizes(data)["header_bit"]
