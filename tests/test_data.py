"""Dataset loading: .npz files, the shared CIFAR-10 JPEG archive, image folders and adversarial shards."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from impure.data import (
    CIFAR10JPEG,
    AdversarialShards,
    ImageFolderDataset,
    ImageTensorDataset,
    NpzDataset,
    fetch_batch,
    load_npz,
    open_dataset,
    write_adversarial_shard,
)


@pytest.fixture(scope="module")
def test_dev(shared_dir):
    return shared_dir / "data" / "cifar10" / "test_dev.npz"


def test_load_npz_reads_the_shared_test_set(test_dev):
    images, labels = load_npz(test_dev)
    raw = np.load(test_dev)
    assert images.shape == (500, 3, 32, 32) and images.dtype == torch.float32
    assert labels.dtype == torch.int64 and labels.tolist() == raw["labels"].tolist()
    assert 0 <= float(images.min()) and float(images.max()) <= 1
    # uint8 HWC -> float CHW, exactly /255.
    assert torch.equal(images[7], torch.from_numpy(raw["images"][7]).permute(2, 0, 1).float() / 255)


def test_load_npz_accepts_float_nchw_and_reports_bad_files(tmp_path):
    images = np.random.default_rng(0).random((4, 3, 8, 8), dtype=np.float32)
    np.savez(tmp_path / "float.npz", images=images, labels=np.arange(4))
    loaded, labels = load_npz(tmp_path / "float.npz")
    assert torch.equal(loaded, torch.from_numpy(images)) and labels.tolist() == [0, 1, 2, 3]

    np.savez(tmp_path / "nolabels.npz", images=images)
    with pytest.raises(ValueError, match=r"lacks the key\(s\) \['labels'\]"):
        load_npz(tmp_path / "nolabels.npz")
    np.savez(tmp_path / "rank3.npz", images=images[0], labels=np.arange(3))
    with pytest.raises(ValueError, match="4-d array"):
        load_npz(tmp_path / "rank3.npz")
    np.savez(tmp_path / "range.npz", images=images * 255, labels=np.arange(4))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        load_npz(tmp_path / "range.npz")
    np.savez(tmp_path / "count.npz", images=images, labels=np.arange(5))
    with pytest.raises(ValueError, match=r"labels must have shape \(4,\)"):
        load_npz(tmp_path / "count.npz")
    with pytest.raises(FileNotFoundError, match="no such .npz"):
        load_npz(tmp_path / "missing.npz")


def test_cifar10_jpeg_decodes_like_pillow(shared_dir):
    path = shared_dir / "data" / "cifar10" / "train_jpeg.npz"
    dataset = CIFAR10JPEG(path)
    assert len(dataset) == 50_000 and dataset.classes[0] == "airplane"
    raw = np.load(path)
    start, end = raw["offsets"][123], raw["offsets"][124]
    expected = np.array(Image.open(io.BytesIO(raw["jpeg_bytes"][start:end].tobytes())).convert("RGB"))
    image, label = dataset[123]
    assert image.shape == (3, 32, 32) and int(label) == int(raw["labels"][123])
    assert torch.equal(image, torch.from_numpy(expected).permute(2, 0, 1).float() / 255)

    subset = CIFAR10JPEG(path, indices=[123, 5, 9])
    images, labels = subset.get_batch([0, 2])
    assert torch.equal(images[0], image)
    assert labels.tolist() == [int(raw["labels"][123]), int(raw["labels"][9])]
    with pytest.raises(ValueError, match="indices must lie in"):
        CIFAR10JPEG(path, indices=[50_000])


def test_tensor_dataset_keeps_uint8_and_batches(test_dev):
    raw = np.load(test_dev)
    dataset = ImageTensorDataset(raw["images"][:10], raw["labels"][:10])
    assert dataset.images.dtype == torch.uint8 and dataset.images.shape == (10, 3, 32, 32)
    images, labels = dataset.get_batch([3, 1])
    assert images.dtype == torch.float32 and labels.tolist() == raw["labels"][[3, 1]].tolist()
    unlabelled = ImageTensorDataset(torch.rand(2, 3, 4, 4))
    assert unlabelled[1][1] == -1
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) or \(N, 3, H, W\)"):
        ImageTensorDataset(torch.rand(2, 4, 4))


def _write_images(folder, pixels, fmt="PNG"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(pixels):
        Image.fromarray(image).save(folder / f"{i:03d}.{fmt.lower()}", format=fmt)


def test_image_folder_with_classes_fails_on_an_unreadable_file_when_it_is_read(tmp_path, test_dev):
    raw = np.load(test_dev)
    _write_images(tmp_path / "cat", raw["images"][:3])
    _write_images(tmp_path / "dog", raw["images"][3:5], fmt="JPEG")
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    dataset = ImageFolderDataset(tmp_path)  # lists the files, opens none
    assert dataset.classes == ["cat", "dog"] and len(dataset) == 6
    assert dataset.files[5].name == "broken.png"
    with pytest.raises(ValueError, match=r"cannot read image file .*dog/broken\.png"):
        fetch_batch(dataset, [5])
    images, labels = fetch_batch(dataset, [0, 4])
    assert labels.tolist() == [0, 1]
    # PNG is lossless: exactly the stored pixels.
    assert torch.equal(images[0], torch.from_numpy(raw["images"][0]).permute(2, 0, 1).float() / 255)


def test_image_folder_flat_resize_and_size_mismatch(tmp_path, test_dev):
    raw = np.load(test_dev)
    _write_images(tmp_path, raw["images"][:2])
    Image.fromarray(np.zeros((40, 20, 3), np.uint8)).save(tmp_path / "big.png")
    flat = ImageFolderDataset(tmp_path)
    assert flat.classes is None and flat.labels.tolist() == [-1, -1, -1]
    with pytest.raises(ValueError, match="pass image_size="):
        flat.get_batch([0, 1, 2])
    resized = ImageFolderDataset(tmp_path, image_size=16)
    images, _ = resized.get_batch([0, 1, 2])
    assert images.shape == (3, 3, 16, 16)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    with pytest.raises(ValueError, match="no images with suffix"):
        ImageFolderDataset(tmp_path / "empty")


def test_adversarial_shards_round_trip(tmp_path):
    clean = torch.randint(0, 256, (6, 3, 8, 8)).float() / 255
    adversarial = (clean + (torch.rand_like(clean) - 0.5) * 2 * 8 / 255).clamp(0, 1)
    labels = torch.arange(6)
    write_adversarial_shard(tmp_path, "shard-00000", adversarial[:4], clean[:4], labels[:4])
    write_adversarial_shard(tmp_path, "shard-00001", adversarial[4:], clean[4:], labels[4:])
    manifest = {"shards": ["shard-00000", "shard-00001"], "complete": False}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="incomplete"):
        AdversarialShards(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({**manifest, "complete": True}))
    dataset = open_dataset(tmp_path)
    assert isinstance(dataset, AdversarialShards) and len(dataset) == 6
    adv, cln, lab = dataset.get_batch([5, 0, 4, 3])  # across both shards, in any order
    assert torch.equal(cln, clean[[5, 0, 4, 3]]) and lab.tolist() == [5, 0, 4, 3]
    assert float((adv - adversarial[[5, 0, 4, 3]]).abs().max()) <= 0.5 / 255 + 1e-6  # rounded to 1/255
    assert float((adv - cln).abs().max()) <= 8 / 255 + 1e-6  # still inside the 8/255 ball
    item = dataset[4]
    assert torch.equal(item[1], clean[4]) and int(item[2]) == 4
    with pytest.raises(IndexError, match=r"indices must lie in \[0, 6\)"):
        dataset.get_batch([6])
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "shard-00001-clean.npy").unlink()
    with pytest.raises(FileNotFoundError, match="shard-00001-clean.npy"):
        AdversarialShards(tmp_path)


def test_open_dataset_dispatch(tmp_path, shared_dir, test_dev):
    assert isinstance(open_dataset(test_dev), NpzDataset)
    assert isinstance(open_dataset(shared_dir / "data" / "cifar10" / "train_jpeg.npz"), CIFAR10JPEG)
    with pytest.raises(FileNotFoundError, match="no such dataset"):
        open_dataset(tmp_path / "nothing.npz")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="expected an image folder"):
        open_dataset(tmp_path / "notes.txt")
