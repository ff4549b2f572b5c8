"""scripts/tokenize.py at scale: class folders, LlamaGen's flip / ten-crop views, shards that
merge one index, resuming, and the AR TokenDataset drawing one view per item."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from src.utils.image_io import to_tensor
from src.zoo.ar.data import TokenDataset
from src.zoo.tools import augmented_views, load_tokenizer, prepare_image
from tests.test_tokenizer_scripts import ROOT, photos, prior_ckpt, run_tokenize  # noqa: F401  (fixtures)


@pytest.fixture(scope="module")
def class_folders(tmp_path_factory):
    """ImageNet layout: two classes of real photo crops of several sizes."""
    from PIL import Image
    from skimage import data

    root = tmp_path_factory.mktemp("imagenet")
    crops = {"n01": [data.astronaut()[:60, :80], data.astronaut()[200:248, 100:148], data.coffee()[:50, :70]],
             "n02": [data.chelsea()[:64, :64], data.chelsea()[100:150, 100:180]]}
    for cls, images in crops.items():
        (root / cls).mkdir()
        for i, arr in enumerate(images):
            Image.fromarray(np.ascontiguousarray(arr)).save(root / cls / f"img{i}.png")
    return root


def test_views_by_value():
    arr = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    one = augmented_views(arr, 20)
    assert one.shape == (1, 20, 20, 3) and np.array_equal(one[0], prepare_image(arr, 20))
    flip = augmented_views(arr, 20, "flip")
    assert np.array_equal(flip[1], flip[0][:, ::-1])
    ten = augmented_views(arr, 20, "ten_crop", crop_range=1.1)
    big = prepare_image(arr, 22)
    assert ten.shape == (10, 20, 20, 3) and ten.dtype == np.uint8
    assert np.array_equal(ten[0], big[:20, :20]) and np.array_equal(ten[3], big[2:, 2:])
    assert np.array_equal(ten[4], big[1:21, 1:21])                      # the centre crop
    assert np.array_equal(ten[5], big[:20, ::-1][:, :20])               # mirror image, top-left
    assert np.array_equal(ten[5], ten[1][:, ::-1]) and np.array_equal(ten[6], ten[0][:, ::-1])
    with pytest.raises(ValueError, match="augmentation"):
        augmented_views(arr, 20, "rotate")


def test_shards_merge_one_index_and_resume(tmp_path, class_folders, prior_ckpt, monkeypatch, capsys):  # noqa: F811
    out = tmp_path / "tokens"
    base = ["--ckpt", prior_ckpt, "--images", class_folders, "--out", out, "--size", "32", "--aug", "ten_crop",
            "--num_shards", "2"]
    run_tokenize(base + ["--shard", "0"], monkeypatch)
    assert "3 images (3 new)" in capsys.readouterr().out           # images 0, 2, 4 of 5
    assert not (out / "index.json").exists()                       # shard 1 has not run
    run_tokenize(base + ["--shard", "1"], monkeypatch)
    index = json.loads((out / "index.json").read_text())
    assert not list(out.glob("index.rank*.json"))
    assert index["classes"] == ["n01", "n02"] and index["augmentation"] == "ten_crop"
    assert sorted(index["images"]) == ["n01/img0", "n01/img1", "n01/img2", "n02/img0", "n02/img1"]
    entry = index["images"]["n02/img1"]
    assert entry["label"] == 1 and entry["views"] == 10 and entry["tokens"] == [4, 4]
    assert (entry["height"], entry["width"]) == (50, 80)
    grids = np.load(out / "n02" / "img1.npy")
    assert grids.shape == (10, 4, 4) and grids.dtype == np.uint8
    # the grids are the tokenizer's codes of the ten views
    from PIL import Image

    model = load_tokenizer(str(prior_ckpt))
    views = augmented_views(np.asarray(Image.open(class_folders / "n02" / "img1.png").convert("RGB")), 32, "ten_crop")
    with torch.no_grad():
        _, codes = model.encode(torch.stack([to_tensor(v) for v in views]))
    assert np.array_equal(codes.numpy(), grids)
    # a restart keeps what is there (and still merges)
    mtime = os.path.getmtime(out / "n01" / "img0.npy")
    run_tokenize(base + ["--shard", "0"], monkeypatch)
    assert "3 images (0 new)" in capsys.readouterr().out and os.path.getmtime(out / "n01" / "img0.npy") == mtime

    ds = TokenDataset(str(out), seq_len=16)
    assert ds.classes == ["n01", "n02"] and len(ds) == 5
    drawn = {int(np.argmax([np.array_equal(ds[(4, pos)]["tokens"].numpy(), g.reshape(-1)) for g in grids]))
             for pos in range(40)}
    assert len(drawn) > 3                                          # training items draw among the views
    assert torch.equal(ds[(4, 7)]["tokens"], ds[(4, 7)]["tokens"])  # the same position, the same view
    val = TokenDataset(str(out), seq_len=16, train=False)
    assert np.array_equal(val[(4, 7)]["tokens"].numpy(), grids[0].reshape(-1))


def test_torchrun_two_processes(tmp_path, class_folders, prior_ckpt):  # noqa: F811
    out = tmp_path / "tokens"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29761",
           "scripts/tokenize.py", "--ckpt", str(prior_ckpt), "--images", str(class_folders), "--out", str(out),
           "--size", "32", "--aug", "flip", "-d", "cpu"]
    res = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "shard 0/2" in res.stdout and "shard 1/2" in res.stdout and "images/s" in res.stdout
    index = json.loads((out / "index.json").read_text())
    assert len(index["images"]) == 5 and np.load(out / "n01" / "img1.npy").shape == (2, 4, 4)


def test_class_folders_need_a_size(tmp_path, class_folders, prior_ckpt):  # noqa: F811
    cmd = [sys.executable, "scripts/tokenize.py", "--ckpt", str(prior_ckpt), "--images", str(class_folders),
           "--out", str(tmp_path)]
    res = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode != 0 and "need --size" in res.stderr
