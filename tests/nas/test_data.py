import numpy as np
import pytest
import torch
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


def test_distorted_digits_are_seeded_and_split_by_original_digit():
    from nas.data import distorted_digits

    a = distorted_digits(train_copies=2, val_copies=3, seed=5, canvas=16)
    b = distorted_digits(train_copies=2, val_copies=3, seed=5, canvas=16)
    c = distorted_digits(train_copies=2, val_copies=3, seed=6, canvas=16)
    for x, y in zip(a, b):
        assert torch.equal(x, y)
    assert not torch.equal(a[0], c[0]) and torch.equal(a[1], c[1])
    train_x, train_y, val_x, val_y = a
    assert train_x.shape == (1438 * 2, 1, 16, 16) and val_x.shape == (359 * 3, 1, 16, 16)
    assert float(train_x.min()) >= 0.0 and float(train_x.max()) <= 1.0
    # every copy of a digit is a different distortion of it
    assert not torch.equal(train_x[:1438], train_x[1438:])
    # the validation digits are plain digits' validation digits, each drawn val_copies times
    plain = load_dataset("digits", 8)
    assert torch.equal(val_y, plain.val.tensors[1].repeat(3))
    with pytest.raises(ValueError, match="copies"):
        distorted_digits(train_copies=0)


def test_distorted_digits_dataset_at_any_resolution():
    splits = load_dataset("digits_distorted", 12)
    assert splits.num_classes == 10 and len(splits.train) == 1438 * 6 and len(splits.val) == 359 * 10
    image, label = splits.val[0]
    assert image.shape == (3, 12, 12) and 0 <= int(label) < 10
    assert float(image.min()) >= -1.0 and float(image.max()) <= 1.0
    assert load_dataset("digits_distorted", 12) is splits  # generated once per process
