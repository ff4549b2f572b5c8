import logging

import numpy as np
import pytest
import torch
from PIL import Image

from src.data.datasets import ImageDataset, collate_images
from src.data.sampler import ResumableSampler
from src.utils.image_io import ImageReadError, load_rgb


@pytest.fixture
def odd_folder(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (80, 96, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a_rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b_grey.png")
    Image.fromarray(np.dstack([rgb, np.full((80, 96), 128, np.uint8)])).save(tmp_path / "c_rgba.png")
    Image.fromarray(rgb).convert("P", palette=Image.ADAPTIVE).save(tmp_path / "d_palette.png")
    Image.fromarray(rgb[..., 1].astype(np.uint16) * 257).save(tmp_path / "e_16bit.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "f_cmyk.jpg")
    data = (tmp_path / "a_rgb.png").read_bytes()
    (tmp_path / "g_truncated.png").write_bytes(data[: len(data) // 3])
    (tmp_path / "h_empty.png").write_bytes(b"")
    (tmp_path / "i_text.png").write_text("not an image")
    Image.fromarray(rgb[:20, :20]).save(tmp_path / "j_tiny.png")
    return tmp_path


def test_conversions_to_rgb(odd_folder):
    ref = load_rgb(odd_folder / "a_rgb.png")
    assert ref.shape == (80, 96, 3) and ref.dtype == np.uint8
    grey = load_rgb(odd_folder / "b_grey.png")
    assert np.array_equal(grey[..., 0], grey[..., 2]) and np.array_equal(grey[..., 0], ref[..., 0])
    rgba = load_rgb(odd_folder / "c_rgba.png")   # alpha 128 composited on white
    expected = np.round(ref * (128 / 255) + 255 * (1 - 128 / 255))
    assert np.abs(rgba.astype(int) - expected).max() <= 1
    assert load_rgb(odd_folder / "d_palette.png").shape == (80, 96, 3)
    sixteen = load_rgb(odd_folder / "e_16bit.png")   # value*257 scaled back to value
    assert np.array_equal(sixteen[..., 0], ref[..., 1])
    assert load_rgb(odd_folder / "f_cmyk.jpg").shape == (80, 96, 3)


@pytest.mark.parametrize("name,reason", [("g_truncated.png", "decode"), ("h_empty.png", "empty"),
                                         ("i_text.png", "not an image")])
def test_bad_files_raise_named_errors(odd_folder, name, reason):
    with pytest.raises(ImageReadError, match=reason) as e:
        load_rgb(odd_folder / name)
    assert name in str(e.value)


def test_exif_rotation_applied(tmp_path):
    arr = np.zeros((10, 30, 3), np.uint8)
    img = Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_rgb(tmp_path / "rot.jpg").shape == (30, 10, 3)


def test_dataset_skips_bad_files_once_and_counts(odd_folder, caplog):
    ds = ImageDataset(str(odd_folder), image_size=64, train=True)
    with caplog.at_level(logging.WARNING):
        items = [ds[i] for i in range(len(ds))] + [ds[i] for i in range(len(ds))]
    assert all(it["image"].shape == (3, 64, 64) for it in items)
    assert all(-1 <= it["image"].min() and it["image"].max() <= 1 for it in items)
    skipped = {p.split("/")[-1] for p in ds.skipped}
    assert skipped == {"g_truncated.png", "h_empty.png", "i_text.png", "j_tiny.png"}
    warnings = [r for r in caplog.records if "skipping image" in r.getMessage()]
    assert len(warnings) == 4       # one line per bad file, not per access
    assert {it["name"] for it in items} == {"a_rgb", "b_grey", "c_rgba", "d_palette", "e_16bit", "f_cmyk"}


def test_openimage_layout_and_missing_folder_message(tmp_path, sample_dir):
    for i in (0, 1):
        (tmp_path / f"train_{i}").mkdir()
        (tmp_path / f"train_{i}" / f"img{i}.png").write_bytes((sample_dir / "coffee.png").read_bytes())
    ds = ImageDataset(str(tmp_path), subset_list=[0, 1], image_size=128)
    assert len(ds) == 2
    with pytest.raises(FileNotFoundError, match="train_5"):
        ImageDataset(str(tmp_path), subset_list=[0, 5])


def test_crops_depend_on_stream_position_only(sample_dir):
    ds = ImageDataset(str(sample_dir), image_size=64)
    a, b, c = ds[(0, 7)], ds[(0, 7)], ds[(0, 8)]
    assert torch.equal(a["image"], b["image"])
    assert not torch.equal(a["image"], c["image"])
    eval_ds = ImageDataset(str(sample_dir), train=False)
    assert eval_ds[0]["image"].shape == (3, 512, 512)   # astronaut, whole image
    batch = collate_images([ds[(0, 1)], ds[(1, 2)]])
    assert batch["image"].shape == (2, 3, 64, 64)


def test_sampler_resumes_exactly_and_splits_ranks():
    straight = ResumableSampler(5, seed=3)
    it = iter(straight)
    stream = [next(it) for _ in range(12)]
    assert sorted(i for i, _ in stream[:5]) == list(range(5))          # each epoch is a permutation
    resumed = iter(ResumableSampler(5, seed=3, start_position=7))
    assert [next(resumed) for _ in range(5)] == stream[7:12]
    r0 = iter(ResumableSampler(5, seed=3, rank=0, world_size=2))
    r1 = iter(ResumableSampler(5, seed=3, rank=1, world_size=2))
    merged = [x for pair in zip([next(r0) for _ in range(6)], [next(r1) for _ in range(6)]) for x in pair]
    assert merged == stream


def _dataset_size(root, barrier, out):
    from src.data.datasets import ImageDataset

    barrier.wait()                                   # both processes fill the folder at the same moment
    out.put(len(ImageDataset(str(root), image_size=64, sample_photos=True).files))


def test_processes_starting_together_all_see_every_sample_photo(tmp_path):
    """The ranks of a data-parallel run build their datasets at once on an empty folder: each must
    list all the sample photos (a rank once listed the other's half-written file, alone)."""
    import multiprocessing as mp

    from src.data.datasets import SAMPLE_PHOTOS

    ctx = mp.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_dataset_size, args=(tmp_path / "photos", barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert [out.get(timeout=5), out.get(timeout=5)] == [len(SAMPLE_PHOTOS)] * 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]          # no temporary folder left


def test_sample_photos_filled_by_another_process_meanwhile_are_kept(tmp_path, monkeypatch):
    import src.data.datasets as datasets

    root = tmp_path / "photos"
    real_export = datasets.export_sample_photos

    def export_while_another_process_wins(folder, names=datasets.SAMPLE_PHOTOS):
        written = real_export(folder, names[:2])
        real_export(root, names[:1])                 # the other process renamed its folder first
        return written

    monkeypatch.setattr(datasets, "export_sample_photos", export_while_another_process_wins)
    datasets.fill_with_sample_photos(root)
    assert sorted(p.name for p in root.iterdir()) == [f"{datasets.SAMPLE_PHOTOS[0]}.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]
