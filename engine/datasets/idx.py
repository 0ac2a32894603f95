"""MNIST-format IDX files from a directory under the operator's root, never from anywhere else.

The root is ``engine.config.config.data_root``, which the API and the worker set from ``OPTIBENCH_IDX_ROOT``
(default ``./data``, relative to the process's working directory); it is read at validation and again at
load time, so a worker re-checks what the API accepted.
"""

import gzip
import math
import struct
from pathlib import Path

import numpy as np
import torch
from pydantic import Field, field_validator

from engine.config import config
from engine.datasets import Data, Dataset, DataShape
from engine.registry import Params

ROOT_ENV = "OPTIBENCH_IDX_ROOT"
IMAGES_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions: n x rows x cols
LABELS_MAGIC = 0x00000801  # unsigned bytes, 1 dimension: n
#: labels are bytes: at most 256 classes, the bound sizing assumes without reading the labels
MAX_CLASSES = 256


def idx_root() -> Path:
    # resolved at every use: the operator's root is checked again whenever a file is opened
    return config.data_root.resolve()


def _under_root(path: Path) -> Path:
    root = idx_root()
    resolved = (root / path).resolve()  # an absolute path replaces the root; symlinks are followed
    if not resolved.is_relative_to(root):
        raise ValueError(f"{str(path)!r} is outside the IDX data root; paths must lie under {ROOT_ENV}")
    return resolved


class IdxParams(Params):
    path: str = Field(".", min_length=1, max_length=1024, description=f"directory, relative to {ROOT_ENV}")
    images: str = Field("train-images-idx3-ubyte", min_length=1, max_length=255, description="a '.gz' copy also works")
    labels: str = Field("train-labels-idx1-ubyte", min_length=1, max_length=255, description="a '.gz' copy also works")
    limit: int | None = Field(None, ge=1, le=100_000_000, description="keep only the first samples")

    @field_validator("path")
    @classmethod
    def _inside_root(cls, path: str) -> str:
        _under_root(Path(path))
        return path  # kept relative, so a worker with the root mounted elsewhere resolves it again

    @field_validator("images", "labels")
    @classmethod
    def _plain_name(cls, name: str) -> str:
        if Path(name).name != name or name in (".", "..") or "\\" in name:
            raise ValueError("must be a file name inside path, without directories")
        return name


class Idx(Dataset):
    name = "idx"
    description = f"MNIST-format IDX images and labels under {ROOT_ENV}; pixels in [0, 1], max label + 1 classes."
    task = "classification"
    standardize_by_default = False  # pixels are already in [0, 1]; per-pixel z-scores blow up rare pixels
    Params = IdxParams
    size_param = "limit"

    @classmethod
    def load(cls, params: IdxParams) -> Data:
        images_path, labels_path = _files(params)
        images_dims, images = _read(images_path, IMAGES_MAGIC)
        labels_dims, labels = _read(labels_path, LABELS_MAGIC)
        n = _count(images_dims, labels_dims, params.limit)
        x = torch.from_numpy(images[: n * images_dims[1] * images_dims[2]].astype(np.float32) / 255)
        y = torch.from_numpy(labels[:n].astype(np.int64))
        # the labels actually loaded decide the classes, so a limit may leave out the highest ones
        return Data(x=x.reshape(n, 1, *images_dims[1:]), y=y, task="classification", n_outputs=int(y.max()) + 1)

    @classmethod
    def shape(cls, params: IdxParams) -> DataShape:
        """From the two headers alone."""
        images_path, labels_path = _files(params)
        images_dims = _header(images_path, IMAGES_MAGIC)
        n = _count(images_dims, _header(labels_path, LABELS_MAGIC), params.limit)
        return DataShape(n, (1, *images_dims[1:]), MAX_CLASSES)


def _files(params: IdxParams) -> tuple[Path, Path]:
    directory = _under_root(Path(params.path))
    return _find(directory, params.images), _find(directory, params.labels)


def _find(directory: Path, name: str) -> Path:
    candidates = [name] if name.endswith(".gz") else [name, name + ".gz"]
    for candidate in candidates:
        path = directory / candidate
        if path.is_file():
            return _under_root(path)  # a symlink must not lead out of the root either
    where = directory.relative_to(idx_root())  # the operator's layout is not the user's business
    raise FileNotFoundError(f"IDX file {name!r} (or {name}.gz) not found in {str(where)!r} under {ROOT_ENV}")


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _parse_header(head: bytes, path: Path, magic: int) -> tuple[int, ...]:
    ndim = magic & 0xFF
    if len(head) < 4 or struct.unpack(">I", head[:4])[0] != magic:
        found = f"0x{struct.unpack('>I', head[:4])[0]:08x}" if len(head) >= 4 else "a truncated file"
        raise ValueError(f"{path.name} is not an IDX file of that kind: magic 0x{magic:08x} expected, found {found}")
    if len(head) < 4 + 4 * ndim:
        raise ValueError(f"{path.name}: the header is truncated")
    dims = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    if dims[0] == 0 or any(d == 0 for d in dims[1:]):
        raise ValueError(f"{path.name}: empty dimensions {dims}")
    return dims


def _header(path: Path, magic: int) -> tuple[int, ...]:
    with _open(path) as f:
        dims = _parse_header(f.read(4 + 4 * (magic & 0xFF)), path, magic)
    if path.suffix != ".gz":  # a gzipped file's length is only known by decompressing it
        _check_length(path, dims, path.stat().st_size)
    return dims


def _read(path: Path, magic: int) -> tuple[tuple[int, ...], np.ndarray]:
    with _open(path) as f:
        raw = f.read()
    dims = _parse_header(raw, path, magic)
    _check_length(path, dims, len(raw))
    return dims, np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * len(dims))


def _check_length(path: Path, dims: tuple[int, ...], length: int) -> None:
    expected = 4 + 4 * len(dims) + math.prod(dims)
    if length != expected:
        raise ValueError(f"{path.name}: the header promises {dims} (a file of {expected} bytes) but it has {length}")


def _count(images_dims: tuple[int, ...], labels_dims: tuple[int, ...], limit: int | None) -> int:
    if images_dims[0] != labels_dims[0]:
        raise ValueError(f"{images_dims[0]} images but {labels_dims[0]} labels")
    return min(images_dims[0], limit or images_dims[0])
