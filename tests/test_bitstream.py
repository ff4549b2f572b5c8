"""Stream framing (src.models.codec.bitstream) and padding (src.utils.padding)."""
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from src.models.codec.bitstream import (
    MAGIC, CorruptBitstreamError, StreamHeader, expected_z_shape, header_bits,
    model_fingerprint, pack_stream, read_stream, stream_sizes, unpack_stream, write_stream)
from src.utils.padding import crop_to, pad_to_multiple

REPO = Path(__file__).resolve().parents[1]
FP = bytes(range(8))


def realistic_stream(seed=0):
    """A 768x512 (Kodak-sized) stream at ~0.1 bpp: 1 z string and 6 y slice strings."""
    rng = random.Random(seed)
    strings = [rng.randbytes(70)] + [rng.randbytes(rng.randint(300, 900)) for _ in range(6)]
    header = StreamHeader(height=512, width=768, beta_rate=1.12, beta_vq=2.0, fingerprint=FP,
                          latent_check=0xDEADBEEF)
    return header, strings, (8, 12), pack_stream(header, strings, (8, 12))


def test_round_trip_and_sizes(tmp_path):
    header, strings, z_shape, data = realistic_stream()
    h, s, z = unpack_stream(data, expected_fingerprint=FP)
    assert (h.height, h.width, h.fingerprint, h.latent_check, h.version) == (512, 768, FP, 0xDEADBEEF, 2)
    assert h.beta_rate == pytest.approx(1.12, abs=1e-6) and h.beta_vq == 2.0
    assert s == strings and z == z_shape
    # file round trip
    n = write_stream(tmp_path / "a.bin", header, [[x] for x in strings], z_shape)  # compressai nesting
    assert n == len(data) == os.path.getsize(tmp_path / "a.bin")
    assert read_stream(tmp_path / "a.bin", FP)[1] == strings
    # sizes: 43 fixed bytes + 7 length prefixes + 4 CRC bytes of overhead
    sizes = stream_sizes(data)
    assert sizes["header_bit"] == header_bits(data) == 8 * (43 + 7 * 4 + 4)
    assert sizes["z_bit"] == 8 * 70 and sizes["y_bit"] == 8 * sum(map(len, strings[1:]))
    assert sizes["header_bit"] + sizes["z_bit"] + sizes["y_bit"] == sizes["total_bit"] == 8 * len(data)


def test_large_image_and_empty_strings():
    header = StreamHeader(70000, 65537, 0.0, 3.5, FP)
    z = expected_z_shape(70000, 65537)
    assert z == (1094, 1025)
    data = pack_stream(header, [b"", b"x"], z)
    h, s, _ = unpack_stream(data)
    assert (h.height, h.width, s) == (70000, 65537, [b"", b"x"])


@pytest.mark.parametrize("data, match", [
    (b"", "too short"),
    (b"DCVC", "too short"),
    (b"XXXX" + bytes(60), "bad magic"),
    (MAGIC + b"\x07" + bytes(60), "version 7"),
    (MAGIC + b"\x01" + bytes(60), "float32 entropy parameters"),
])
def test_short_magic_version(data, match):
    with pytest.raises(CorruptBitstreamError, match=match):
        unpack_stream(data)


def test_truncation_at_every_position():
    *_, data = realistic_stream(1)
    for cut in range(len(data)):
        with pytest.raises(CorruptBitstreamError):
            unpack_stream(data[:cut])


def test_random_bit_flips():
    *_, data = realistic_stream(2)
    rng = random.Random(1234)
    for trial in range(1000):
        buf = bytearray(data)
        for _ in range(1 if trial % 2 else rng.randint(2, 16)):
            pos = rng.randrange(len(buf) * 8)
            buf[pos // 8] ^= 1 << (pos % 8)
        if bytes(buf) == data:  # an even flip count on one bit cancels out
            continue
        with pytest.raises(CorruptBitstreamError):
            unpack_stream(bytes(buf))


def test_trailing_bytes_other_model_and_shape():
    header, strings, z_shape, data = realistic_stream()
    with pytest.raises(CorruptBitstreamError, match="CRC"):
        unpack_stream(data + b"\0")
    # trailing bytes inside a frame with a valid CRC (a forged or mis-written stream)
    with pytest.raises(CorruptBitstreamError, match="4 trailing bytes"):
        unpack_stream(with_crc(data[:-4] + b"junk"))
    with pytest.raises(CorruptBitstreamError, match="different model: fingerprint 0001020304050607"):
        unpack_stream(data, expected_fingerprint=b"\xff" * 8)
    bad = pack_stream(header, strings, (9, 12))
    with pytest.raises(CorruptBitstreamError, match="z shape"):
        unpack_stream(bad)
    assert unpack_stream(bad, factor=None)[2] == (9, 12)
    nan = pack_stream(StreamHeader(512, 768, float("nan"), 1.0, FP), strings, z_shape)
    with pytest.raises(CorruptBitstreamError, match="non-finite"):
        unpack_stream(nan)


def with_crc(body):
    import zlib
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_forged_frames_with_valid_crc():
    """Field checks must hold even when the CRC matches (a forged or mis-written stream)."""
    header, strings, z_shape, data = realistic_stream()
    body = bytearray(data[:-4])
    more = body[:41] + (8).to_bytes(2, "big") + body[43:]  # declares 8 strings, holds 7
    with pytest.raises(CorruptBitstreamError, match="length field of string 7"):
        unpack_stream(with_crc(bytes(more)))
    long = body[:43] + (10 ** 6).to_bytes(4, "big") + body[47:]  # z string claims 1 MB
    with pytest.raises(CorruptBitstreamError, match="string 0 declares 1000000 bytes"):
        unpack_stream(with_crc(bytes(long)))
    zero_h = body[:5] + bytes(4) + body[9:]
    with pytest.raises(CorruptBitstreamError, match="image size 0x768"):
        unpack_stream(with_crc(bytes(zero_h)))


def test_model_fingerprint_is_deterministic():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    fp = model_fingerprint(m)
    assert len(fp) == 8
    sd = {k: v.clone() for k, v in reversed(list(m.state_dict().items()))}
    assert model_fingerprint(sd) == fp  # order-free, copies give the same bytes
    assert model_fingerprint(m, prefixes=["0."]) != fp
    with torch.no_grad():
        m[0].weight[0, 0, 0, 0] += 1e-3
    assert model_fingerprint(m) != fp


def test_real_compressai_strings():
    from compressai.entropy_models import EntropyBottleneck
    torch.manual_seed(0)
    eb = EntropyBottleneck(8)
    eb.update(force=True)
    z = torch.randn(1, 8, 3, 5) * 4
    strings = eb.compress(z)
    fp = model_fingerprint(eb)
    data = pack_stream(StreamHeader(150, 300, 0.5, 1.0, fp), strings, (3, 5))
    header, s, shape = unpack_stream(data, fp)
    out = eb.decompress(s, shape)  # an EntropyBottleneck takes one string per sample
    assert torch.equal(out, eb.decompress(strings, (3, 5)))
    assert torch.equal(out, torch.round(z - eb._get_medians()) + eb._get_medians())


FUZZ = textwrap.dedent("""
    import random, torch
    from compressai.entropy_models import EntropyBottleneck
    from src.models.codec.bitstream import *
    torch.manual_seed(0); eb = EntropyBottleneck(8); eb.update(force=True)
    strings = eb.compress(torch.randn(1, 8, 4, 4) * 8)
    data = pack_stream(StreamHeader(256, 256, 1.0, 2.0, model_fingerprint(eb)), strings, (4, 4))
    rng, bad = random.Random(7), 0
    for i in range(3000):
        buf = bytearray(data[:rng.randrange(len(data))] if i % 3 == 0 else data)
        for _ in (range(rng.randint(1, 4)) if i % 3 else ()):
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        if bytes(buf) == data:
            continue
        try:
            _, s, shape = unpack_stream(bytes(buf))
        except CorruptBitstreamError:
            continue
        eb.decompress(s, shape)  # would only run if a damaged stream got through
        bad += 1
    if bad:
        raise SystemExit(f"{bad} damaged streams passed the frame check")
""")


def test_fuzz_in_subprocess_with_decoder():
    """A damaged stream that reached the rANS decoder could segfault; run in a child."""
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-c", FUZZ], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"


# ----------------------------------------------------------------------------- padding
@pytest.mark.parametrize("hw", [(427, 640), (300, 451), (65, 65), (1, 1), (65, 4097), (64, 128)])
@pytest.mark.parametrize("mode", ["reflect", "replicate", "constant"])
def test_pad_and_crop(hw, mode):
    h, w = hw
    x = torch.rand(1, 3, h, w)
    y, (ph, pw) = pad_to_multiple(x, 64, mode)
    assert y.shape[-2] % 64 == 0 and y.shape[-1] % 64 == 0
    assert (ph, pw) == (y.shape[-2] - h, y.shape[-1] - w) and ph < 64 and pw < 64
    assert torch.equal(crop_to(y, h, w), x)
    assert y.shape[-2] // 64 == expected_z_shape(h, w)[0]


def test_reflect_beyond_image_size():
    row = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 1, 3)
    y, pad = pad_to_multiple(row, 8)
    assert pad == (7, 5)
    assert y[0, 0, 0].tolist() == [0, 1, 2, 1, 0, 1, 2, 1]  # mirror extension, period 4
    assert torch.equal(y[0, 0, 7], y[0, 0, 0])  # a 1-pixel-high image is replicated
    one, _ = pad_to_multiple(torch.full((3, 1, 1), 5.0), 64)  # unbatched input
    assert one.shape == (3, 64, 64) and bool((one == 5).all())
    with pytest.raises(ValueError):
        crop_to(one, 65, 1)
