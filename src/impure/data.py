"""Image datasets: `.npz` arrays, the shared CIFAR-10 JPEG archive, image folders and adversarial shards.

Every dataset yields float images in [0, 1], shape (3, H, W), RGB, with an int64 label (-1 when the data
has no labels). Datasets also offer `get_batch(indices)`, which returns stacked tensors without a Python
loop over samples where the storage allows it; `fetch_batch` uses it when present.
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset, Subset

from ._util.atomic import atomic_path

__all__ = [
    "AdversarialShards",
    "CIFAR10JPEG",
    "ImageFolderDataset",
    "ImageTensorDataset",
    "NpzDataset",
    "fetch_batch",
    "load_npz",
    "open_dataset",
    "shard_files",
    "write_adversarial_shard",
]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
SHARD_MANIFEST = "manifest.json"


def _to_float_nchw(array: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] -> float32 (N, 3, H, W) in [0, 1]."""
    tensor = torch.as_tensor(array)
    if tensor.ndim != 4:
        raise ValueError(f"{name} must be a 4-d array (N, H, W, 3) uint8 or (N, 3, H, W) float, "
                         f"got shape {tuple(tensor.shape)}")
    if tensor.dtype == torch.uint8:
        if tensor.shape[-1] == 3:
            tensor = tensor.permute(0, 3, 1, 2)
        elif tensor.shape[1] != 3:
            raise ValueError(f"{name}: uint8 images must be (N, H, W, 3) or (N, 3, H, W), "
                             f"got shape {tuple(tensor.shape)}")
        return tensor.float().div_(255)
    if not tensor.is_floating_point():
        raise TypeError(f"{name} must be uint8 (0-255) or float (0-1) images, got dtype {tensor.dtype}")
    if tensor.shape[1] != 3:
        raise ValueError(f"{name}: float images must be (N, 3, H, W), got shape {tuple(tensor.shape)}")
    tensor = tensor.float()
    if tensor.numel() and (float(tensor.min()) < 0 or float(tensor.max()) > 1):
        raise ValueError(f"{name}: float images must lie in [0, 1], got range "
                         f"[{float(tensor.min()):.4g}, {float(tensor.max()):.4g}]")
    return tensor


def _read_npz(path: str | os.PathLike, keys: Sequence[str]) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such .npz file: {path}")
    with np.load(path, allow_pickle=False) as archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise ValueError(f"{path} lacks the key(s) {missing}; it has {sorted(archive.files)}")
        return {key: archive[key] for key in keys}


def _check_label_array(labels: np.ndarray | torch.Tensor, count: int, source: str) -> torch.Tensor:
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"{source}: labels must be integers, got dtype {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != count:
        raise ValueError(f"{source}: labels must have shape ({count},) to match the images, "
                         f"got {tuple(labels.shape)}")
    return labels.long()


def load_npz(path: str | os.PathLike, images_key: str = "images",
             labels_key: str = "labels") -> tuple[torch.Tensor, torch.Tensor]:
    """Load a whole `.npz` of images and labels into memory.

    Args:
        path: an `.npz` with `images` (uint8 N×H×W×3 or float N×3×H×W in [0, 1]) and `labels` (integers).
        images_key: name of the images array.
        labels_key: name of the labels array.

    Returns:
        images, float32 (N, 3, H, W) in [0, 1], and labels, int64 (N,).
    """
    arrays = _read_npz(path, (images_key, labels_key))
    images = _to_float_nchw(arrays[images_key], f"{path}:{images_key}")
    return images, _check_label_array(arrays[labels_key], images.shape[0], str(path))


class ImageTensorDataset(Dataset):
    """Images held in memory as uint8 (N, H, W, 3) / (N, 3, H, W) or float (N, 3, H, W), with labels.

    Args:
        images: the images; uint8 storage is kept (4x smaller) and converted per batch.
        labels: int class indices (N,), or None for unlabelled data (label -1).
    """

    def __init__(self, images: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor | None = None):
        images = torch.as_tensor(images)
        if images.ndim != 4 or 3 not in (images.shape[1], images.shape[-1]):
            raise ValueError(f"images must be (N, H, W, 3) or (N, 3, H, W), got shape {tuple(images.shape)}")
        if images.dtype == torch.uint8 and images.shape[-1] == 3:
            images = images.permute(0, 3, 1, 2)
        elif images.dtype != torch.uint8:
            images = _to_float_nchw(images, "images")
        self.images = images.contiguous()
        count = self.images.shape[0]
        self.labels = (torch.full((count,), -1, dtype=torch.long) if labels is None
                       else _check_label_array(labels, count, "ImageTensorDataset"))

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.get_batch([index])
        return images[0], labels[0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) float in [0, 1] and labels (B,) for `indices`."""
        index = torch.as_tensor(indices, dtype=torch.long)
        images = self.images[index]
        images = images.float().div_(255) if images.dtype == torch.uint8 else images.clone()
        return images, self.labels[index]


class NpzDataset(ImageTensorDataset):
    """An `.npz` file of `images` and `labels` (see `load_npz`), held in memory in its stored dtype.

    Args:
        path: the `.npz` file.
        images_key: name of the images array.
        labels_key: name of the labels array.
    """

    def __init__(self, path: str | os.PathLike, images_key: str = "images", labels_key: str = "labels"):
        arrays = _read_npz(path, (images_key, labels_key))
        images = arrays[images_key]
        if images.dtype != np.uint8:
            images = _to_float_nchw(images, f"{path}:{images_key}")
        super().__init__(images, _check_label_array(arrays[labels_key], images.shape[0], str(path)))
        self.path = Path(path)


class CIFAR10JPEG(Dataset):
    """The CIFAR-10 training set stored as JPEG bytes (`../shared/data/cifar10/train_jpeg.npz`).

    Images are decoded with Pillow when fetched (about 0.2 ms each), so the dataset starts instantly.

    Args:
        path: the `.npz` with `jpeg_bytes`, `offsets`, `labels` (and `classes`).
        indices: optional subset of image indices to expose, in this order.
    """

    def __init__(self, path: str | os.PathLike, indices: Sequence[int] | torch.Tensor | None = None):
        arrays = _read_npz(path, ("jpeg_bytes", "offsets", "labels"))
        self._bytes = arrays["jpeg_bytes"]
        self._offsets = arrays["offsets"].astype(np.int64)
        labels = _check_label_array(arrays["labels"], len(self._offsets) - 1, str(path))
        if self._offsets[-1] != len(self._bytes):
            raise ValueError(f"{path}: offsets end at {self._offsets[-1]} but jpeg_bytes has "
                             f"{len(self._bytes)} bytes; the file is damaged")
        count = labels.shape[0]
        self._indices = torch.arange(count) if indices is None else torch.as_tensor(indices, dtype=torch.long)
        if self._indices.numel() and (int(self._indices.min()) < 0 or int(self._indices.max()) >= count):
            raise ValueError(f"indices must lie in [0, {count}), got range "
                             f"[{int(self._indices.min())}, {int(self._indices.max())}]")
        self.labels = labels[self._indices]
        with np.load(path, allow_pickle=False) as archive:
            self.classes = [str(c) for c in archive["classes"]] if "classes" in archive.files else None
        self.path = Path(path)

    def __len__(self) -> int:
        return self._indices.numel()

    def _decode(self, item: int) -> np.ndarray:
        start, end = self._offsets[item], self._offsets[item + 1]
        with Image.open(io.BytesIO(memoryview(self._bytes)[start:end])) as image:
            return np.asarray(image.convert("RGB"))

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.get_batch([index])
        return images[0], labels[0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded images (B, 3, H, W) float in [0, 1] and labels (B,) for `indices`."""
        index = torch.as_tensor(indices, dtype=torch.long)
        pixels = np.stack([self._decode(int(i)) for i in self._indices[index]])
        return _to_float_nchw(pixels, str(self.path)), self.labels[index]


class ImageFolderDataset(Dataset):
    """PNG/JPEG files in a folder: either flat (unlabelled, label -1) or one subfolder per class.

    Building it only lists the files (ImageNet has 1.28 M of them); a file that cannot be read fails when
    it is read, with an error that names it.

    Args:
        root: the folder.
        image_size: resize every image to this side (int) or (height, width); None keeps the sizes,
            which must then agree for batching.
        extensions: file suffixes to include (case-insensitive).
    """

    def __init__(self, root: str | os.PathLike, image_size: int | tuple[int, int] | None = None,
                 extensions: Sequence[str] = IMAGE_EXTENSIONS):
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such image folder: {self.root}")
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if image_size is not None and (len(image_size) != 2 or min(image_size) <= 0):
            raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
        self.image_size = image_size
        suffixes = tuple(e.lower() for e in extensions)
        subfolders = sorted(p for p in self.root.iterdir() if p.is_dir())
        self.classes = [p.name for p in subfolders] if subfolders else None
        sources = [(p, label) for label, p in enumerate(subfolders)] if subfolders else [(self.root, -1)]
        candidates = [(f, label) for folder, label in sources for f in sorted(folder.iterdir())
                      if f.is_file() and f.suffix.lower() in suffixes]
        self.files: list[Path] = [file for file, _ in candidates]
        if not self.files:
            raise ValueError(f"no images with suffix {list(suffixes)} in {self.root}")
        self.labels = torch.tensor([label for _, label in candidates], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.files)

    def load(self, index: int) -> np.ndarray:
        """The image at `index` as uint8 (H, W, 3), resized if the dataset has an `image_size`."""
        path = self.files[index]
        try:
            with Image.open(path) as image:
                image = image.convert("RGB")
                if self.image_size is not None:
                    height, width = self.image_size
                    image = image.resize((width, height), Image.Resampling.BICUBIC)
                return np.asarray(image)
        except (OSError, UnidentifiedImageError, SyntaxError) as error:
            raise ValueError(f"cannot read image file {path}: {error}") from error

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _to_float_nchw(self.load(index)[None], str(self.files[index]))[0], self.labels[index]

    def get_batch(self, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, 3, H, W) float in [0, 1] and labels (B,); all images must share one size."""
        index = torch.as_tensor(indices, dtype=torch.long)
        pixels = [self.load(int(i)) for i in index]
        sizes = {p.shape for p in pixels}
        if len(sizes) > 1:
            raise ValueError(f"images in {self.root} have different sizes {sorted(sizes)}; "
                             "pass image_size= to resize them to one size")
        return _to_float_nchw(np.stack(pixels), str(self.root)), self.labels[index]


SHARD_ARRAYS = ("adversarial", "clean", "labels")


def shard_files(folder: str | os.PathLike, name: str) -> dict[str, Path]:
    """The `.npy` files of shard `name` in `folder`: {"adversarial": ..., "clean": ..., "labels": ...}."""
    return {key: Path(folder) / f"{name}-{key}.npy" for key in SHARD_ARRAYS}


def write_adversarial_shard(folder: str | os.PathLike, name: str, adversarial: torch.Tensor,
                            clean: torch.Tensor, labels: torch.Tensor) -> None:
    """Write one shard of (adversarial, clean, label) triples as three `.npy` files, each atomically.

    Images are stored as uint8 (N, H, W, 3), rounded to the nearest 1/255, which keeps an L-inf
    perturbation of k/255 around an 8-bit clean image inside its ball. `.npy` files can be memory-mapped,
    so shard sets larger than memory can be read.

    Args:
        folder: where to write (it must exist).
        name: the shard's name, e.g. "shard-00000"; files are `<name>-adversarial.npy` etc.
        adversarial: float (N, 3, H, W) in [0, 1].
        clean: float (N, 3, H, W) in [0, 1], the matching clean images.
        labels: int (N,) class indices.
    """
    if adversarial.shape != clean.shape or adversarial.ndim != 4:
        raise ValueError(f"adversarial {tuple(adversarial.shape)} and clean {tuple(clean.shape)} must be "
                         "equal (N, 3, H, W) shapes")

    def quantise(images: torch.Tensor) -> np.ndarray:
        pixels = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)
        return pixels.permute(0, 2, 3, 1).cpu().numpy()

    arrays = {"adversarial": quantise(adversarial), "clean": quantise(clean),
              "labels": labels.detach().cpu().long().numpy()}
    for key, path in shard_files(folder, name).items():
        with atomic_path(path) as temporary, open(temporary, "wb") as stream:
            np.save(stream, arrays[key])


class AdversarialShards(Dataset):
    """A folder written by `impure make-adversarial`: `manifest.json` plus shards of `.npy` triples.

    Items are (adversarial image, clean image, label). The image arrays are memory-mapped and read per
    batch, so the set may be larger than memory.

    Args:
        root: the folder holding `manifest.json`.
    """

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        manifest_path = self.root / SHARD_MANIFEST
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.root} is not an adversarial dataset: it has no {SHARD_MANIFEST} "
                                    "(create one with `impure make-adversarial`)")
        self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        names = self.manifest.get("shards")
        if not names or not self.manifest.get("complete"):
            raise ValueError(f"{self.root} is incomplete: run the same `impure make-adversarial` command "
                             "again to finish it")
        self._shards = []
        for name in names:
            files = shard_files(self.root, name)
            missing = [str(path) for path in files.values() if not path.is_file()]
            if missing:
                raise FileNotFoundError(f"{self.root}: shard files {missing} listed in the manifest are missing")
            arrays = {key: np.load(path, mmap_mode="r") for key, path in files.items()}
            count = arrays["labels"].shape[0]
            if arrays["adversarial"].shape != arrays["clean"].shape or arrays["clean"].shape[0] != count:
                raise ValueError(f"{self.root}: shard {name} has mismatched arrays "
                                 f"{ {k: a.shape for k, a in arrays.items()} }")
            self._shards.append(arrays)
        self.labels = torch.from_numpy(np.concatenate([np.asarray(a["labels"]) for a in self._shards])).long()
        self._ends = np.cumsum([a["labels"].shape[0] for a in self._shards])

    def __len__(self) -> int:
        return int(self._ends[-1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        adversarial, clean, labels = self.get_batch([index])
        return adversarial[0], clean[0], labels[0]

    def get_batch(self, indices: Sequence[int] | torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Adversarial (B, 3, H, W), clean (B, 3, H, W) in [0, 1] and labels (B,) for `indices`."""
        index = np.asarray(torch.as_tensor(indices, dtype=torch.long))
        if index.size and (index.min() < 0 or index.max() >= len(self)):
            raise IndexError(f"indices must lie in [0, {len(self)})")
        shard_of = np.searchsorted(self._ends, index, side="right")
        height, width = self._shards[0]["clean"].shape[1:3]
        images = {key: np.empty((index.size, height, width, 3), np.uint8) for key in ("adversarial", "clean")}
        for shard in np.unique(shard_of):  # a loop over the shards a batch touches, not over samples
            rows = np.flatnonzero(shard_of == shard)
            local = index[rows] - (self._ends[shard - 1] if shard else 0)
            for key in images:
                images[key][rows] = self._shards[shard][key][local]
        adversarial, clean = (_to_float_nchw(images[key], str(self.root)) for key in ("adversarial", "clean"))
        return adversarial, clean, self.labels[torch.from_numpy(index)]


def fetch_batch(dataset: Dataset, indices: Sequence[int] | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Stacked tensors for `indices`: the dataset's `get_batch` if it has one, else its items stacked.

    Args:
        dataset: any dataset whose items are tuples of tensors (or numbers).
        indices: the sample indices of the batch.
    """
    if isinstance(dataset, Subset):
        return fetch_batch(dataset.dataset, [dataset.indices[int(i)] for i in indices])
    if hasattr(dataset, "get_batch"):
        return tuple(dataset.get_batch(indices))
    items = [dataset[int(i)] for i in torch.as_tensor(indices, dtype=torch.long)]
    return tuple(torch.stack([torch.as_tensor(v) for v in column]) for column in zip(*items, strict=True))


def open_dataset(path: str | os.PathLike, image_size: int | tuple[int, int] | None = None) -> Dataset:
    """Open the dataset at `path`, choosing the reader from what is there.

    A folder with `manifest.json` is `AdversarialShards`; another folder is `ImageFolderDataset`; an
    `.npz` with `jpeg_bytes` is `CIFAR10JPEG`; another `.npz` is `NpzDataset`.

    Args:
        path: the file or folder.
        image_size: resize for image folders (ignored by the array formats, whose size is fixed).
    """
    path = Path(path)
    if path.is_dir():
        if (path / SHARD_MANIFEST).is_file():
            return AdversarialShards(path)
        return ImageFolderDataset(path, image_size=image_size)
    if not path.exists():
        raise FileNotFoundError(f"no such dataset file or folder: {path}")
    if path.suffix.lower() != ".npz":
        raise ValueError(f"cannot read {path}: expected an image folder, an adversarial-shard folder "
                         "or an .npz file")
    with np.load(path, allow_pickle=False) as archive:
        is_jpeg = "jpeg_bytes" in archive.files
    return CIFAR10JPEG(path) if is_jpeg else NpzDataset(path)
