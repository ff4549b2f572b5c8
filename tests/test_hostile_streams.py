"""Hostile inputs (issue 21, items 1, 2, 6): forged entropy strings and huge declared sizes are refused
as corrupt streams, never a crash; folder entries that only look like images are skipped, not failed.

The stream cases decode in a child process (with a timeout), so a segfault of the entropy decoder is a
failed test rather than a crashed pytest. The codec is the toy-width DC-VIC, randomly initialised:
its streams are real ones, which is all these tests need.
"""
import importlib.util
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image

from src.models.codec.bitstream import CorruptBitstreamError

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "config" / "quickstart" / "stage3.yaml")
OPTS = ["subnet.vq_model.ckpt_path=null"]


def random_codec(**kwargs):
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    torch.manual_seed(0)
    return ImageCoder(load_codec(CONFIG, None, "cpu", OPTS)[0], **kwargs)


@pytest.fixture(scope="module")
def coder():
    return random_codec()


def photo(size=64):
    from skimage import data

    return data.astronaut()[100:100 + size, 200:200 + size]


# ------------------------------------------------------------------------------ streams in a child
CHILD = textwrap.dedent(r"""
    import dataclasses, json, random, sys, time
    from pathlib import Path
    import torch
    sys.path.insert(0, {root!r})
    from src.compression import decompress_folder
    from src.models.codec.bitstream import pack_stream, unpack_stream
    from src.models.codec.image_coder import ImageCoder
    from src.models.codec.loading import load_codec

    torch.manual_seed(0)
    model = load_codec({config!r}, None, "cpu", {opts!r})[0]
    coder = ImageCoder(model)
    header, payload = unpack_stream(coder.encode(torch.rand(1, 3, 64, 64) * 2 - 1, 1.0, 1.0).data)
    rng = random.Random(0)

    def forged(side, make):
        return pack_stream(dataclasses.replace(header, height=side, width=side), make(payload))

    def report(name, data, decoder=coder):
        t = time.time()
        try:
            decoder.decode(data)
            error, message = None, ""
        except Exception as e:
            error, message = type(e).__name__, str(e)
        print(json.dumps({{"case": name, "bytes": len(data), "error": error, "message": message,
                          "seconds": time.time() - t}}), flush=True)

    report("good_64", forged(64, lambda s: s))
    for side in (64, 128):
        report(f"zero_{{side}}", forged(side, lambda s: b""))
        report(f"four_{{side}}", forged(side, lambda s: s[:4]))
        # long enough for the length rules at 64 px: only the checked decoder stops these
        report(f"zero_state_{{side}}", forged(side, lambda s: bytes(len(s))))
        report(f"garbage_{{side}}", forged(side, lambda s: rng.randbytes(len(s))))
    report("empty_768", forged(768, lambda s: b""))
    report("huge_20000", forged(20000, lambda s: s))
    report("huge_65535_max_side_raised", forged(65535, lambda s: s), ImageCoder(model, max_side=1 << 16))

    folder = Path(sys.argv[1])
    (folder / "a_empty_768.bin").write_bytes(forged(768, lambda s: b""))
    (folder / "b_good.bin").write_bytes(forged(64, lambda s: s))
    folder_report = decompress_folder(coder, folder, folder / "out", progress=False)
    print(json.dumps({{"case": "folder", "rows": [r["img_name"] for r in folder_report.rows],
                      "failed": sorted(folder_report.failed)}}), flush=True)
""")


#: address space of the child that decodes the hostile streams (like ``ulimit -v``): a stream that
#: made the decoder allocate for its declared size would fail there, not take the machine's memory
CHILD_MEMORY_BYTES = 6 << 30


def limit_memory() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (CHILD_MEMORY_BYTES, CHILD_MEMORY_BYTES))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{case: result} from one child process; cases after a crash are missing (see ``case``)."""
    folder = tmp_path_factory.mktemp("hostile_bins")
    code = CHILD.format(root=str(ROOT), config=CONFIG, opts=OPTS)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(folder)], cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=300, preexec_fn=limit_memory)
        out, rc, err = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as e:
        out, rc, err = (e.stdout or b"").decode(), "timeout", (e.stderr or b"").decode()
    results = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            results[row["case"]] = row
    err = "\n".join(line for line in err.splitlines() if "warn" not in line.lower() and "RANDOMLY" not in line)
    return {"results": results, "rc": rc, "stderr": err[-1500:]}


def case(hostile, name):
    if name not in hostile["results"]:
        pytest.fail(f"the child never reported {name!r}: exit {hostile['rc']} (-11 is SIGSEGV)\n{hostile['stderr']}")
    return hostile["results"][name]


def test_real_stream_still_decodes(hostile):
    assert case(hostile, "good_64")["error"] is None


def test_empty_strings_at_768px_are_corrupt_not_a_segfault(hostile):
    """A 19-byte stream: a valid header of this model for 768x768, and no string at all."""
    row = case(hostile, "empty_768")
    assert row["bytes"] == 19
    assert row["error"] == "CorruptBitstreamError" and "too short" in row["message"]


@pytest.mark.parametrize("name", ["zero_64", "four_64", "zero_128", "four_128"])
def test_empty_and_4_byte_strings_are_corrupt(hostile, name):
    row = case(hostile, name)
    assert row["error"] == "CorruptBitstreamError", row
    assert "string holds at least 8" in row["message"]


@pytest.mark.parametrize("name", ["zero_state_64", "zero_state_128", "garbage_64", "garbage_128"])
def test_strings_of_plausible_length_never_read_past_their_end(hostile, name):
    """Zeros or random bytes of a real string's length pass the length rules (at 64 px); the
    checked decoder or the check value refuses them (at 128 px the length rule already does)."""
    row = case(hostile, name)
    assert row["error"] in ("CorruptBitstreamError", "StreamCheckError"), row
    assert any(m in row["message"] for m in ("rANS", "need at least", "check value")), row


def test_huge_declared_sizes_are_refused_at_once(hostile):
    row = case(hostile, "huge_20000")
    assert row["error"] == "CorruptBitstreamError" and "--max_side" in row["message"]
    assert row["seconds"] < 2
    # with the cap raised, strings far too short for 65535^2 are refused before anything is allocated
    row = case(hostile, "huge_65535_max_side_raised")
    assert row["error"] == "CorruptBitstreamError" and "need at least" in row["message"], row
    assert row["seconds"] < 2


def test_a_hostile_file_does_not_stop_the_folder(hostile):
    row = case(hostile, "folder")
    assert row["rows"] == ["b_good"] and row["failed"] == ["a_empty_768.bin"]


# ------------------------------------------------------------------------------ the checked decoder
def gaussian_tables():
    from compressai.entropy_models import GaussianConditional
    from compressai.models.base import get_scale_table

    gc = GaussianConditional(None)
    gc.update_scale_table(get_scale_table())
    gc.update()
    return gc._quantized_cdf.tolist(), gc._cdf_length.tolist(), gc._offset.tolist()


def test_checked_decoder_matches_compressai_on_real_strings():
    """Symbol for symbol, escapes (values far outside the tables) included; strings end exactly."""
    from compressai import ans
    from compressai.entropy_models import EntropyBottleneck

    from src.models.codec import rans_guard

    cdf, lengths, offsets = gaussian_tables()
    rng = random.Random(0)
    for trial in range(60):
        n = rng.randint(0, 400)
        indexes = [rng.randrange(len(cdf)) for _ in range(n)]
        symbols = [rng.choice([0, 1, -3, rng.randint(-50, 50), rng.randint(-2 ** 26, 2 ** 26)]) for _ in range(n)]
        # compressai's encoder overruns its own buffer on a few costly symbols: lead with free ones
        indexes, symbols = [0] * 300 + indexes, [0] * 300 + symbols
        s = ans.RansEncoder().encode_with_indexes(symbols, indexes, cdf, lengths, offsets)
        ours = rans_guard.decode_with_indexes(s, indexes, cdf, lengths, offsets)
        assert ours == ans.RansDecoder().decode_with_indexes(s, indexes, cdf, lengths, offsets) == symbols

    torch.manual_seed(0)
    eb = EntropyBottleneck(8)
    eb.update(force=True)
    z = torch.randn(1, 8, 6, 5) * 20
    strings = eb.compress(z)
    ref = eb.decompress(strings, (6, 5))
    assert rans_guard.guard_entropy_coders([eb]) == 1
    assert torch.equal(eb.decompress(strings, (6, 5)), ref)


@pytest.mark.parametrize("data", [b"", b"\x00" * 4, b"\x00" * 6, b"\x00" * 8, b"\xff" * 8, b"\xff" * 64,
                                  b"\x00\x00\x00\x80" * 2, bytes(range(40))])
def test_checked_decoder_never_reads_past_the_string(data):
    from src.models.codec import rans_guard

    cdf, lengths, offsets = gaussian_tables()
    for index in (0, len(cdf) - 1):   # the most and the least certain table
        with pytest.raises(CorruptBitstreamError):
            rans_guard.decode_with_indexes(data, [index] * 5000, cdf, lengths, offsets)


def test_strings_must_end_where_the_coder_ends():
    from compressai import ans

    from src.models.codec import rans_guard

    cdf, lengths, offsets = gaussian_tables()
    indexes, symbols = [40] * 500, [random.Random(1).randint(-3, 3) for _ in range(500)]
    s = ans.RansEncoder().encode_with_indexes(symbols, indexes, cdf, lengths, offsets)
    with pytest.raises(CorruptBitstreamError, match="1 of its .* words left over"):
        rans_guard.decode_with_indexes(s + bytes(4), indexes, cdf, lengths, offsets)
    with pytest.raises(CorruptBitstreamError):
        rans_guard.decode_with_indexes(s[:-4], indexes, cdf, lengths, offsets)
    flipped = bytearray(s)
    flipped[len(s) // 2] ^= 0x10
    with pytest.raises(CorruptBitstreamError):
        rans_guard.decode_with_indexes(bytes(flipped), indexes, cdf, lengths, offsets)


def test_minimum_length_rule_holds_and_is_tight():
    """min_string_bytes never exceeds a real string, and is within a word of the cheapest one."""
    from compressai import ans

    from src.models.codec import rans_guard

    cdf, lengths, offsets = gaussian_tables()
    bits = rans_guard.cheapest_symbol_bits(cdf, lengths)
    assert rans_guard.MIN_STRING_BYTES == 8
    # symbols that cost next to nothing: the flushed state alone, 2**31 as two little-endian words
    free = ans.RansEncoder().encode_with_indexes([0] * 300, [0] * 300, cdf, lengths, offsets)
    assert len(free) == 8 and rans_guard.min_string_bytes(bits[0] * 300, 300) == 8
    for t in (0, 20, len(cdf) - 1):
        freqs = [cdf[t][j + 1] - cdf[t][j] for j in range(lengths[t] - 1)]
        mode = freqs.index(max(freqs)) + offsets[t]   # the most probable value: the cheapest string
        for n in (100, 5000, 50000):
            s = ans.RansEncoder().encode_with_indexes([mode] * n, [t] * n, cdf, lengths, offsets)
            bound = rans_guard.min_string_bytes(bits[t] * n, n)
            assert bound <= len(s) <= max(bound + 8, 8), (t, n, bound, len(s))


def test_max_side_keyword_and_too_short_strings(coder):
    from src.models.codec.image_coder import MAX_DECODE_SIDE, ImageCoder

    assert coder.max_side == MAX_DECODE_SIDE == 16384
    x = torch.from_numpy(photo(128).copy()).permute(2, 0, 1).float().unsqueeze(0) / 127.5 - 1
    data = coder.encode(x, 1.0, 1.0).data
    small = ImageCoder(coder.model, max_side=64)
    with pytest.raises(CorruptBitstreamError, match="128x128 image; this decoder accepts sides up to 64"):
        small.decode(data)
    assert coder.decode(data)[0].shape == (1, 3, 128, 128)
    with pytest.raises(ValueError, match="max_side"):
        ImageCoder(coder.model, max_side=0)


# ------------------------------------------------------------------------------ folder entries
def test_directories_and_broken_symlinks_are_skipped_not_failed(coder, tmp_path, caplog):
    from src.compression import compress_folder

    img_dir = tmp_path / "img"
    img_dir.mkdir()
    Image.fromarray(photo()).save(img_dir / "a.png")
    (img_dir / "dir.png").mkdir()
    (img_dir / "loop.png").symlink_to(img_dir / "loop.png")
    (img_dir / "dangling.jpg").symlink_to(img_dir / "missing.jpg")
    (img_dir / "link.png").symlink_to(img_dir / "a.png")   # a link to an image is an image
    (img_dir / "notes.txt").write_text("not an image name: ignored")
    with caplog.at_level(logging.INFO, logger="src.compression"):
        report = compress_folder(coder, img_dir, tmp_path / "out", 1.0, 1.0, estimate=False, progress=False)
    assert [r["img_name"] for r in report.rows] == ["a", "link"]
    assert report.failed == {}
    assert report.skipped == {"dangling.jpg": "a dangling symlink", "dir.png": "a directory",
                              "loop.png": "a symlink loop"}
    logged = caplog.text
    for name in report.skipped:
        assert f"skipped {name}" in logged
    summary = json.loads((tmp_path / "out" / "_avg_bitrate.json").read_text())
    assert summary["failed"] == {} and summary["num_images"] == 2
    assert summary["skipped"] == report.skipped


def test_oversized_images_are_refused_from_their_header_and_the_folder_goes_on(tmp_path, monkeypatch):
    """Images above the pixel limit, or with a side the default decoder would refuse, fail alone and
    before any pixel is decoded; the other images are coded."""
    from src.compression import compress_folder

    img_dir = tmp_path / "img"
    img_dir.mkdir()
    Image.fromarray(photo()).save(img_dir / "a_small.png")
    Image.new("RGB", (288, 256)).save(img_dir / "b_many_pixels.png")            # 73,728 px
    Image.new("RGB", (64, 400)).save(img_dir / "c_tall.png")                    # 25,600 px, side 400
    decoded = []
    load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size) or load(self))
    report = compress_folder(random_codec(max_side=300), img_dir, tmp_path / "out", 1.0, 1.0, estimate=False,
                             progress=False, max_pixels=50_000)
    assert [r["img_name"] for r in report.rows] == ["a_small"]
    assert "0.1 megapixels, above the limit of 0.05" in report.failed["b_many_pixels.png"]
    assert "--max_megapixels" in report.failed["b_many_pixels.png"]
    assert "--max_side" in report.failed["c_tall.png"]
    assert (288, 256) not in decoded and (64, 400) not in decoded              # refused from the header


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_script_help_and_flags():
    from src.models.codec.image_coder import MAX_DECODE_SIDE

    compress = load_script("compress")
    assert "not counted as failures" in " ".join(compress.__doc__.split())
    decompress = load_script("decompress")
    base = ["--config_path", "c", "--model_path", "m", "--bin_dir", "b", "--save_dir", "s"]
    assert decompress.parse_args(base).max_side == MAX_DECODE_SIDE
    assert decompress.parse_args(base + ["--max_side", "40000"]).max_side == 40000
