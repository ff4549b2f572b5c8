"""Stream framing (src.models.codec.bitstream) and padding (src.utils.padding)."""
import random
from pathlib import Path

import pytest
import torch

from src.models.codec.bitstream import (
    MAX_IMAGE_SIDE, CorruptBitstreamError, StreamCheckError, StreamHeader, check_prefix, expected_z_shape,
    header_bits, header_bytes, model_fingerprint, pack_stream, read_stream, stream_check, stream_sizes,
    unpack_stream, write_stream)
from src.utils.padding import crop_to, pad_to_multiple

REPO = Path(__file__).resolve().parents[1]
FP = bytes(range(8))
CONFIG = str(REPO / "config" / "quickstart" / "stage3.yaml")
OPTS = ["subnet.vq_model.ckpt_path=null", "model.selected_beta_rate=[0.5,1.5]", "model.selected_beta_vq=[1.0,2.0]"]


def header_of(**kw):
    fields = dict(height=512, width=768, beta_rate=1.12, beta_vq=2.0, fingerprint=FP[:2], check=0xDEADBEEF)
    fields.update(kw)
    return StreamHeader(**fields)


def test_round_trip_and_sizes(tmp_path):
    payload = random.Random(0).randbytes(1200)
    data = pack_stream(header_of(), payload)
    h, p = unpack_stream(data, expected_fingerprint=FP)
    assert (h.height, h.width, h.fingerprint, h.check, h.version, h.quality) == (512, 768, FP[:2], 0xDEADBEEF, 3, None)
    assert h.beta_rate == pytest.approx(1.12, abs=1e-6) and h.beta_vq == 2.0 and p == payload
    # a Kodak-sized image: 19 bytes (152 bits) with explicit betas, 12 (96) with a quality index, 11 without betas
    assert stream_sizes(data) == {"header_bit": 152, "payload_bit": 9600, "total_bit": 8 * len(data)}
    q = pack_stream(header_of(beta_rate=None, beta_vq=None, quality=4), payload)
    assert header_bits(q) == 96 and unpack_stream(q)[0].quality == 4
    none = pack_stream(header_of(beta_rate=None, beta_vq=None), payload)
    assert header_bits(none) == 88 and unpack_stream(none)[0].beta_rate is None
    assert check_prefix(data) == data[:15] and check_prefix(q) == q[:8]
    n = write_stream(tmp_path / "a.bin", header_of(), payload)
    assert n == len(data) and read_stream(tmp_path / "a.bin", FP) == (h, payload)


def test_large_image_and_side_limits():
    data = pack_stream(header_of(height=70000, width=MAX_IMAGE_SIDE), bytes(8))
    h, _ = unpack_stream(data)
    assert (h.height, h.width) == (70000, MAX_IMAGE_SIDE) and header_bits(data) == 8 * (1 + 3 + 3 + 8 + 2 + 4)
    assert expected_z_shape(70000, 65537) == (1094, 1025)
    for bad in (0, MAX_IMAGE_SIDE + 1):
        with pytest.raises(ValueError, match="outside"):
            pack_stream(header_of(width=bad), bytes(8))
    # a height of 0, a varint in a longer form than needed, one longer than 3 bytes
    for body, match in ((b"\x00", "image size 0x"), (b"\x80\x00", "shortest form"),
                        (b"\x80\x80\x80\x01", "over 3 bytes")):
        with pytest.raises(CorruptBitstreamError, match=match):
            unpack_stream(bytes([0xDE]) + body + b"\x01" + bytes(30))


@pytest.mark.parametrize("data, match", [
    (b"", "too short"),
    (bytes([0xDE]), "too short"),
    (b"XXXX" + bytes(60), "bad tag byte 0x58"),
    (bytes([0xD6]) + bytes(60), "version 1"),
    (bytes([0xDF]) + bytes(60), "beta mode 3"),
    (b"DCVC\x01" + bytes(60), "earlier format .version 1"),
    (b"DCVC\x02" + bytes(60), "re-encode the image"),
])
def test_short_tag_version(data, match):
    with pytest.raises(CorruptBitstreamError, match=match):
        unpack_stream(data)


def test_truncated_header_other_model_and_betas():
    data = pack_stream(header_of(), bytes(8))
    for cut in range(len(data)):
        with pytest.raises(CorruptBitstreamError):
            unpack_stream(data[:cut])
    with pytest.raises(CorruptBitstreamError, match="different model: fingerprint 0001, this model ffff"):
        unpack_stream(data, expected_fingerprint=b"\xff" * 8)
    nan = pack_stream(header_of(beta_rate=float("nan")), bytes(8))
    with pytest.raises(CorruptBitstreamError, match="non-finite"):
        unpack_stream(nan)
    with pytest.raises(ValueError, match="both betas"):
        pack_stream(header_of(beta_vq=None), bytes(8))


def test_check_value_covers_every_input():
    y = torch.randn(1, 4, 2, 3)
    prefix = header_bytes(header_of())
    base = stream_check(prefix, FP, 1.12, 2.0, y)
    y2 = y.clone()
    y2[0, 3, 1, 2] = torch.nextafter(y2[0, 3, 1, 2], torch.tensor(10.0))   # one ulp
    assert len({base, stream_check(prefix[:-1] + b"\x00", FP, 1.12, 2.0, y),
                stream_check(prefix, FP[::-1], 1.12, 2.0, y), stream_check(prefix, FP, 1.13, 2.0, y),
                stream_check(prefix, FP, 1.12, 2.0, y2)}) == 5
    assert stream_check(prefix, FP, 1.12, 2.0, y.double()) == base     # float32 values, whatever the dtype


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


def test_one_string_holds_several_groups_and_decodes_like_compressai():
    """z-like and y-like groups in one string: our checked reader and compressai's own
    ``decode_stream`` give the symbols back; the reader insists on the string's exact end."""
    from compressai.ans import RansDecoder
    from compressai.entropy_models import EntropyBottleneck, GaussianConditional
    from compressai.models.base import get_scale_table

    from src.models.codec.symbols import SymbolReader, SymbolWriter, coder_tables

    torch.manual_seed(0)
    eb, gc = EntropyBottleneck(8), GaussianConditional(None)
    eb.update(force=True)
    gc.update_scale_table(get_scale_table(), force=True)
    z = torch.round(torch.randn(8, 3, 5) * 4).int()
    z_idx = eb._build_indexes((1, 8, 3, 5))[0]
    scales = torch.rand(2, 6, 4, 4) * 5
    ys = [torch.round(torch.randn(6, 4, 4) * scales[i] * 3).int() for i in range(2)]   # some escape
    y_idx = gc.build_indexes(scales)
    w = SymbolWriter()
    w.write("z", eb, z, z_idx)
    for i in range(2):
        w.write("y", gc, ys[i], y_idx[i])
    data = w.flush()
    r = SymbolReader(data)
    assert torch.equal(r.read(eb, z_idx), z) and all(torch.equal(r.read(gc, y_idx[i]), ys[i]) for i in range(2))
    r.finish()
    dec = RansDecoder()
    dec.set_stream(data)
    assert dec.decode_stream(z_idx.reshape(-1).tolist(), *coder_tables(eb)) == z.reshape(-1).tolist()
    short = SymbolReader(data)
    short.read(eb, z_idx)
    with pytest.raises(CorruptBitstreamError, match="words left over"):
        short.finish()                                     # the y groups were not read
    bits = w.ideal_bits()
    assert set(bits) == {"z", "y"} and 0 < bits["z"] + bits["y"] <= 8 * len(data)


@pytest.fixture(scope="module")
def toy_coder():
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    torch.manual_seed(0)
    return ImageCoder(load_codec(CONFIG, None, "cpu", OPTS)[0])


def toy_image(seed=0, size=64):
    from skimage import data

    top = 100 + 40 * seed
    arr = data.astronaut()[top:top + size, 200:200 + size]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1


def test_every_truncation_and_bit_flip_of_a_real_stream_is_refused(toy_coder):
    """No CRC over the bytes: the frame rules, the checked rANS decoder and the check value after
    decoding must catch every truncation and every flipped bit (no y_hat is ever returned)."""
    data = toy_coder.encode(toy_image(), 1.0, 3.0).data          # explicit betas
    toy_coder.decode_latent(data)
    damaged = [data[:cut] for cut in range(len(data))] + [data + bytes(4), data + b"\x01"]
    rng = random.Random(1234)
    for trial in range(400):
        buf = bytearray(data)
        for _ in range(1 if trial % 2 else rng.randint(2, 16)):
            pos = rng.randrange(len(buf) * 8)
            buf[pos // 8] ^= 1 << (pos % 8)
        if bytes(buf) != data:
            damaged.append(bytes(buf))
    for buf in damaged:
        with pytest.raises(CorruptBitstreamError):
            toy_coder.decode_latent(buf)


def test_quality_index_needs_the_senders_pairs(toy_coder):
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    enc = toy_coder.encode(toy_image(), 1.5, 2.0)                 # the second selected pair
    assert enc.header_bit == 80 and unpack_stream(enc.data)[0].quality == 1     # 64 px: 1-byte sides
    assert toy_coder.decode(enc.data)[1].beta_rate == 1.5
    # the same weights with other selected pairs: the index resolves to other betas -> refused
    torch.manual_seed(0)
    other = load_codec(CONFIG, None, "cpu", OPTS[:1] + ["model.selected_beta_rate=[0.5,1.25]",
                                                        "model.selected_beta_vq=[1.0,2.0]"])[0]
    with pytest.raises(StreamCheckError, match="check value"):
        ImageCoder(other).decode(enc.data)
    torch.manual_seed(0)
    one = load_codec(CONFIG, None, "cpu", OPTS[:1] + ["model.selected_beta_rate=[0.5]",
                                                      "model.selected_beta_vq=[1.0]"])[0]
    with pytest.raises(CorruptBitstreamError, match="quality index 1; this model has 1 selected"):
        ImageCoder(one).decode(enc.data)


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


def test_folder_estimates_come_from_the_coding_pass(toy_coder, tmp_path, sample_dir):
    """compress_folder runs g_a once per image: the estimate is the model's for the latents it
    coded, the same numbers as a separate estimate pass."""
    import pandas as pd

    from src.compression import compress_folder
    from src.models.codec.image_coder import estimated_bits
    from src.utils.image_io import load_rgb, to_tensor

    model, calls = toy_coder.model, []
    encode = model.encode
    model.encode = lambda *a, **k: calls.append(1) or encode(*a, **k)
    try:
        report = compress_folder(toy_coder, sample_dir, tmp_path, 1.5, 2.0, progress=False)
    finally:
        del model.encode
    names = sorted(p.stem for p in sample_dir.glob("*.png"))
    assert len(calls) == len(names) == len(report.rows)
    csv = pd.read_csv(tmp_path / "_bitrates.csv").set_index("img_name")
    x = to_tensor(load_rgb(sample_dir / f"{names[0]}.png")).unsqueeze(0)
    second = estimated_bits(model, x, 1.5, 2.0)
    assert csv.loc[names[0], "pred_bit"] == pytest.approx(second["pred_bit"], rel=1e-12)
    assert csv.loc[names[0], "pred_z_bit"] == pytest.approx(second["pred_z_bit"], rel=1e-12)
