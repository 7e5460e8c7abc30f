import numpy as np
import pytest
from PIL import Image

from nas.data import load_dataset


def test_digits_is_embedded_and_split_deterministically():
    a, b = load_dataset("digits", 32), load_dataset("digits", 32)
    image, label = a.train[0]
    assert image.shape == (3, 32, 32) and 0 <= int(label) < 10 and a.num_classes == 10
    assert len(a.train) + len(a.val) == 1797 and len(a.val) == 359
    assert (a.val.tensors[1] == b.val.tensors[1]).all()


def test_imagefolder_by_path(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    splits = load_dataset("imagefolder", 16, root=tmp_path)
    assert splits.num_classes == 2 and len(splits.train) == 6
    assert splits.train[0][0].shape == (3, 16, 16) and splits.val[0][0].shape == (3, 16, 16)


def test_missing_paths_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dataset("cifar10", 32, root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="train/"):
        load_dataset("imagefolder", 32, root=tmp_path)
    with pytest.raises(ValueError, match="needs a 'root'"):
        load_dataset("cifar100", 32)
    with pytest.raises(ValueError, match="unknown dataset 'imagenet22k'"):
        load_dataset("imagenet22k", 32, root=tmp_path)
