"""Pre-tokenized training data for the proposal network: one ``.npy`` index grid per image.

The grids are those of ``scripts/tokenize.py`` (any integer dtype, shape ``(h, w)``). Class
labels come from the layout:

* ``root/<class name>/*.npy`` (ImageNet-style): classes are the sorted sub-folder names, 0..C-1;
* ``root/*.npy`` with ``root/labels.json`` = ``{"<file stem>": class_id, ...}``;
* ``root/*.npy`` alone: every image is class 0 (unconditional data).

A file may hold several views of its image (``scripts/tokenize.py --aug flip | ten_crop``: shape
``(views, h, w)``, or ``(views, n)`` for a 1D tokenizer): a training item takes one, drawn from its
position in the epoch (so a resumed run draws the same), an evaluation item the first.

Items are ``{"tokens": (h * w,) long, "label": long, "name": str}``; :func:`collate_tokens`
batches them. (The dataset belongs in ``src/data``; it lives here until that package takes it.)
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from src.utils.paths import looked_for, resolve_input
from src.utils.registry import DATASETS


def scan_token_folder(root: Path) -> Tuple[List[Path], List[int], List[str]]:
    """(files, labels, class names) of a token folder (layouts in the module docstring)."""
    subdirs = sorted(p for p in root.iterdir() if p.is_dir())
    class_dirs = [d for d in subdirs if any(d.glob("*.npy"))]
    if class_dirs:
        files, labels = [], []
        for label, d in enumerate(class_dirs):
            found = sorted(d.glob("*.npy"))
            files += found
            labels += [label] * len(found)
        return files, labels, [d.name for d in class_dirs]
    files = sorted(root.glob("*.npy"))
    label_file = root / "labels.json"
    if label_file.is_file():
        table: Dict[str, int] = json.loads(label_file.read_text())
        missing = [f.stem for f in files if f.stem not in table]
        if missing:
            raise KeyError(f"{label_file}: no label for {len(missing)} files, e.g. {missing[:3]}")
        return files, [int(table[f.stem]) for f in files], []
    return files, [0] * len(files), []


@DATASETS.register()
class TokenDataset(Dataset):
    """Token grids under ``root_dir``; ``seq_len`` (optional) is checked on every item."""

    def __init__(self, root_dir: str, seq_len: Optional[int] = None, train: bool = True,
                 max_items: Optional[int] = None, name: Optional[str] = None):
        root = resolve_input(root_dir, "dir")  # relative: the current directory, then the repository
        if not root.is_dir():
            raise FileNotFoundError(f"token dataset {name or root}: folder {root_dir} not found (looked for: "
                                    f"{looked_for(root_dir)}); write it with "
                                    f"scripts/tokenize.py (one .npy per image)")
        self.files, self.labels, self.classes = scan_token_folder(root)
        if max_items is not None:
            self.files, self.labels = self.files[:max_items], self.labels[:max_items]
        if not self.files:
            raise FileNotFoundError(f"token dataset {name or root}: no .npy files in {root} or its sub-folders")
        self.seq_len, self.train = seq_len, train

    def __len__(self) -> int:
        return len(self.files)

    def _has_views(self, arr: np.ndarray) -> bool:
        """Whether a file holds several views: by ``seq_len`` when set (a (views, ...) array whose
        views have seq_len tokens), else a 3-D array (views of 2-D grids)."""
        if self.seq_len is not None:
            return arr.size != self.seq_len and arr.ndim >= 2 and int(np.prod(arr.shape[1:])) == self.seq_len
        return arr.ndim == 3

    def __getitem__(self, key) -> Dict[str, object]:
        index = key[0] if isinstance(key, tuple) else key  # ResumableSampler yields (index, position)
        path = self.files[index]
        arr = np.load(path)
        if self._has_views(arr):
            view = int(np.random.default_rng([index, key[1]]).integers(arr.shape[0])) \
                if self.train and isinstance(key, tuple) else 0
            arr = arr[view]
        tokens = torch.from_numpy(arr.astype(np.int64).reshape(-1))
        if self.seq_len is not None and tokens.numel() != self.seq_len:
            raise ValueError(f"{path}: {tokens.numel()} tokens, but the model expects seq_len={self.seq_len} "
                             f"(tokenize all images at one size)")
        return {"tokens": tokens, "label": torch.tensor(self.labels[index]), "name": path.stem}


def collate_tokens(batch):
    return {"tokens": torch.stack([b["tokens"] for b in batch]), "label": torch.stack([b["label"] for b in batch]),
            "name": [b["name"] for b in batch]}
