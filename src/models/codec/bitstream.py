"""One framed file per compressed image: header, entropy strings, CRC32.

The entropy coder (compressai's rANS) has no framing of its own, and a truncated
or corrupted string fed to it can give NaN images or even crash the process. So
every stream is wrapped in a small frame and the frame is verified completely
*before* any string reaches a decoder.

Layout (all integers big-endian)::

    offset  size  field
    0       4     magic            b"DCVC"
    4       1     version          u8 (FORMAT_VERSION)
    5       4     height           u32, image height before padding
    9       4     width            u32, image width before padding
    13      4     beta_rate        float32
    17      4     beta_vq          float32
    21      8     fingerprint      first 8 bytes of SHA-256 over the model's tensors
    29      4     latent_check     u32, CRC-32 of the decoded latent y_hat (float32, little-endian)
    33      4     z_height         u32, spatial shape of the hyper-latent z
    37      4     z_width          u32
    41      2     n_strings        u16, number of entropy strings
    43      ...   n_strings x (u32 length, bytes)
    end-4   4     crc32            zlib.crc32 of every byte before it

The CRC at the end guards the bytes; ``latent_check`` guards the decoding: a receiver whose
entropy decoding does not reproduce the sender's y_hat (a forged stream, or a bug) is told so
instead of writing a wrong image. It costs 32 bits per image (a false accept has odds 2**-32).
Version 1 (no latent check, float32 entropy parameters) is refused: re-encode its images.

DC-VIC writes 7 strings: one for z, then one for each of the 6 y slices. The
frame itself does not care; :func:`stream_sizes` splits the bits into header,
z and y for reporting.

:func:`unpack_stream` raises :class:`CorruptBitstreamError` (a ``ValueError``)
for every malformed input and no other exception.
"""
from __future__ import annotations

import hashlib
import math
import os
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

MAGIC = b"DCVC"
FORMAT_VERSION = 2
FINGERPRINT_BYTES = 8
#: Largest image side the format allows; larger values are treated as corruption. Decoders
#: accept less by default (``ImageCoder``'s ``max_side``, ``image_coder.MAX_DECODE_SIDE``).
MAX_IMAGE_SIDE = 1 << 20

_FIXED = struct.Struct(">4sBIIff8sIIIH")  # everything up to and including n_strings
_LEN = struct.Struct(">I")
_CRC = struct.Struct(">I")
MIN_STREAM_BYTES = _FIXED.size + _CRC.size

StringsLike = Sequence[Union[bytes, Sequence[bytes]]]


class CorruptBitstreamError(ValueError):
    """The bytes are not a valid stream for this format (or for this model)."""


class EntropyDesyncError(CorruptBitstreamError):
    """An intact frame for this model whose entropy strings did not decode as they were coded:
    the receiver's entropy parameters differ from the sender's, or the stream was forged."""


@dataclass(frozen=True)
class StreamHeader:
    """Typed header of one stream.

    Attributes:
        height, width: size of the original (unpadded) image in pixels.
        beta_rate, beta_vq: the coding parameters the decoder must condition on
            (stored as float32, so they round-trip to float32 precision).
        fingerprint: :data:`FINGERPRINT_BYTES` bytes from :func:`model_fingerprint`.
        latent_check: :func:`latent_check` of the y_hat the receiver must decode (0: none given).
        version: format version (set by the writer; checked by the reader).
    """

    height: int
    width: int
    beta_rate: float
    beta_vq: float
    fingerprint: bytes
    latent_check: int = 0
    version: int = FORMAT_VERSION


def latent_check(y_hat: Any) -> int:
    """CRC-32 of a decoded latent (a tensor), over its values as little-endian float32."""
    arr = y_hat.detach().cpu().float().contiguous().numpy()
    return zlib.crc32(arr.astype("<f4", copy=False).tobytes())


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
        The first :data:`FINGERPRINT_BYTES` bytes of the digest.
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


def check_z_shape(header: StreamHeader, z_shape: Sequence[int], factor: int = 64,
                  rounding: str = "ceil") -> None:
    """Raise :class:`CorruptBitstreamError` unless ``z_shape`` matches the image size."""
    want = expected_z_shape(header.height, header.width, factor, rounding)
    if tuple(z_shape) != want:
        raise CorruptBitstreamError(
            f"z shape {tuple(z_shape)} does not fit a {header.height}x{header.width} image "
            f"(expected {want} for downsampling {factor}, rounding {rounding!r})")


# --------------------------------------------------------------------------- writing
def _flatten_strings(strings: StringsLike) -> List[bytes]:
    """Accept ``[b"..", ..]`` or compressai's ``[[b".."], ..]`` (batch size 1)."""
    out = []
    for i, s in enumerate(strings):
        if isinstance(s, (list, tuple)):
            if len(s) != 1:
                raise ValueError(f"string group {i} holds {len(s)} strings; one stream holds batch size 1")
            s = s[0]
        if not isinstance(s, (bytes, bytearray)):
            raise TypeError(f"string {i} is {type(s).__name__}, expected bytes")
        out.append(bytes(s))
    return out


def pack_stream(header: StreamHeader, strings: StringsLike, z_shape: Sequence[int]) -> bytes:
    """Frame one image's entropy strings into bytes (see the module docstring)."""
    flat = _flatten_strings(strings)
    if len(header.fingerprint) != FINGERPRINT_BYTES:
        raise ValueError(f"fingerprint must be {FINGERPRINT_BYTES} bytes, got {len(header.fingerprint)}")
    if not (1 <= header.height <= MAX_IMAGE_SIDE and 1 <= header.width <= MAX_IMAGE_SIDE):
        raise ValueError(f"image size {header.height}x{header.width} outside 1..{MAX_IMAGE_SIDE}")
    if len(z_shape) != 2 or not all(1 <= int(v) <= 0xFFFFFFFF for v in z_shape):
        raise ValueError(f"z_shape must be (height, width) with positive u32 values, got {tuple(z_shape)}")
    if len(flat) > 0xFFFF:
        raise ValueError(f"too many strings ({len(flat)})")
    if not 0 <= header.latent_check <= 0xFFFFFFFF:
        raise ValueError(f"latent_check must be a u32, got {header.latent_check}")
    parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, header.height, header.width,
                         header.beta_rate, header.beta_vq, header.fingerprint, header.latent_check,
                         int(z_shape[0]), int(z_shape[1]), len(flat))]
    for s in flat:
        if len(s) > 0xFFFFFFFF:
            raise ValueError("string longer than 4 GiB")
        parts += [_LEN.pack(len(s)), s]
    body = b"".join(parts)
    return body + _CRC.pack(zlib.crc32(body))


def write_stream(path: Union[str, os.PathLike], header: StreamHeader, strings: StringsLike,
                 z_shape: Sequence[int]) -> int:
    """Write a framed stream to ``path``; returns the number of bytes written."""
    data = pack_stream(header, strings, z_shape)
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


# --------------------------------------------------------------------------- reading
def _parse(data: bytes) -> Tuple[StreamHeader, List[bytes], Tuple[int, int]]:
    """Frame checks in order: length, magic, version, CRC, length fields, trailing bytes."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < MIN_STREAM_BYTES:
        raise CorruptBitstreamError(
            f"stream too short: {len(data)} bytes, a valid stream has at least {MIN_STREAM_BYTES}")
    if data[:4] != MAGIC:
        raise CorruptBitstreamError(f"bad magic {data[:4]!r}, expected {MAGIC!r} (not a DC-VIC stream)")
    if data[4] != FORMAT_VERSION:
        old = (" (version 1 streams were coded with float32 entropy parameters, which another machine "
               "may not reproduce: re-encode the image)") if data[4] == 1 else ""
        raise CorruptBitstreamError(
            f"unsupported format version {data[4]} (this reader supports {FORMAT_VERSION}){old}")
    body, (crc,) = data[:-_CRC.size], _CRC.unpack(data[-_CRC.size:])
    if zlib.crc32(body) != crc:
        raise CorruptBitstreamError(
            f"CRC mismatch: stored {crc:08x}, computed {zlib.crc32(body):08x} (stream truncated or damaged)")
    _, version, h, w, beta_rate, beta_vq, fp, check, zh, zw, n = _FIXED.unpack_from(body, 0)
    pos, strings = _FIXED.size, []
    for i in range(n):
        if pos + _LEN.size > len(body):
            raise CorruptBitstreamError(f"stream ends inside the length field of string {i} of {n}")
        (length,) = _LEN.unpack_from(body, pos)
        pos += _LEN.size
        if length > len(body) - pos:
            raise CorruptBitstreamError(
                f"string {i} declares {length} bytes but only {len(body) - pos} remain")
        strings.append(body[pos:pos + length])
        pos += length
    if pos != len(body):
        raise CorruptBitstreamError(f"{len(body) - pos} trailing bytes after the last string")
    header = StreamHeader(h, w, beta_rate, beta_vq, fp, check, version)
    return header, strings, (zh, zw)


def _check_values(header: StreamHeader, z_shape: Tuple[int, int]) -> None:
    """Sanity of the decoded numbers (a frame with a valid CRC may still be forged)."""
    if not (1 <= header.height <= MAX_IMAGE_SIDE and 1 <= header.width <= MAX_IMAGE_SIDE):
        raise CorruptBitstreamError(
            f"image size {header.height}x{header.width} outside 1..{MAX_IMAGE_SIDE}")
    if not (math.isfinite(header.beta_rate) and math.isfinite(header.beta_vq)):
        raise CorruptBitstreamError(
            f"non-finite coding parameters beta_rate={header.beta_rate}, beta_vq={header.beta_vq}")
    if min(z_shape) < 1:
        raise CorruptBitstreamError(f"empty z shape {z_shape}")


def unpack_stream(data: bytes, expected_fingerprint: Optional[bytes] = None, *,
                  factor: Optional[int] = 64, rounding: str = "ceil",
                  ) -> Tuple[StreamHeader, List[bytes], Tuple[int, int]]:
    """Verify and split a framed stream.

    Args:
        data: the whole file content.
        expected_fingerprint: the decoding model's :func:`model_fingerprint`; if
            given, a stream made by another model is rejected.
        factor, rounding: the z-shape rule (see :func:`expected_z_shape`);
            ``factor=None`` skips that check.

    Returns:
        ``(header, strings, z_shape)``; ``[[s] for s in strings]`` is the nested
        form compressai's ``decompress`` takes.

    Raises:
        CorruptBitstreamError: for any malformed stream, with the reason.
    """
    header, strings, z_shape = _parse(data)
    _check_values(header, z_shape)
    if factor is not None:
        check_z_shape(header, z_shape, factor, rounding)
    if expected_fingerprint is not None and header.fingerprint != bytes(expected_fingerprint):
        raise CorruptBitstreamError(
            f"stream was made by a different model: fingerprint {header.fingerprint.hex()}, "
            f"this model {bytes(expected_fingerprint).hex()}")
    return header, strings, z_shape


def read_stream(path: Union[str, os.PathLike], expected_fingerprint: Optional[bytes] = None,
                **kwargs: Any) -> Tuple[StreamHeader, List[bytes], Tuple[int, int]]:
    """Read and verify a stream file (see :func:`unpack_stream`)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return unpack_stream(data, expected_fingerprint, **kwargs)
    except CorruptBitstreamError as e:
        raise CorruptBitstreamError(f"{os.fspath(path)}: {e}") from None


# --------------------------------------------------------------------------- sizes
def stream_sizes(data: bytes, n_z_strings: int = 1) -> Dict[str, int]:
    """Bits of a verified stream, split for reporting.

    Returns a dict with ``header_bit`` (magic, fields, length prefixes and CRC),
    ``z_bit`` (the first ``n_z_strings`` strings), ``y_bit`` (the other strings)
    and ``total_bit``; header + z + y == total.
    """
    _, strings, _ = _parse(data)
    z = sum(len(s) for s in strings[:n_z_strings])
    y = sum(len(s) for s in strings[n_z_strings:])
    total = len(data)
    return {"header_bit": 8 * (total - z - y), "z_bit": 8 * z, "y_bit": 8 * y, "total_bit": 8 * total}


def header_bits(data: bytes) -> int:
    """Framing overhead of a stream in bits (everything except the entropy strings)."""
    return stream_sizes(data)["header_bit"]
