"""Image datasets in the IDX format of MNIST: a reader, integrity checks, and a
fetcher for MNIST and EMNIST when a folder does not have them yet.

IDX layout: 2 zero bytes, a type byte (0x08 = unsigned byte), the number of
dimensions, then one big-endian uint32 per dimension, then the data. Files may be
gzip-compressed (``.gz``); both spellings are looked for.

Checksums are SHA-256 of the *uncompressed* bytes, so a copy recompressed by
another tool still verifies.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from snn_lstm.errors import UserError

log = logging.getLogger("snnlstm.data")

IDX_TYPES = {0x08: np.uint8}


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """The array in an IDX file (gzip or raw) and the SHA-256 of its raw bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise UserError(f"{path} cannot be read ({error}): replace the file with a good copy")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise UserError(f"{path} is not an IDX file (bad header {raw[:4].hex()}): replace it with a good copy")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = tuple(int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim))
    expected = header + int(np.prod(dims))
    if len(raw) != expected:
        raise UserError(
            f"{path} is damaged: its header announces {dims} ({expected} bytes) but it holds {len(raw)} bytes"
        )
    data = np.frombuffer(raw, dtype=IDX_TYPES[raw[2]], offset=header).reshape(dims)
    return data, hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class IdxSource:
    """Where a dataset in the MNIST file layout lives and how to check it."""

    name: str  # folder under paths.data_dir
    files: dict  # split -> (images file, labels file), without .gz
    sizes: dict  # split -> number of examples (None: not checked)
    sha256: dict  # file name -> SHA-256 of its uncompressed bytes (missing: not checked)
    urls: tuple = ()  # mirrors holding the .gz files, tried in turn
    archive: str | None = None  # a zip holding the .gz files instead (EMNIST)
    transposed: bool = False  # images stored column-major (EMNIST)


MNIST = IdxSource(
    name="mnist",
    files={"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
           "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")},
    sizes={"train": 60000, "test": 10000},
    sha256={
        "train-images-idx3-ubyte": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
        "train-labels-idx1-ubyte": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
        "t10k-images-idx3-ubyte": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
        "t10k-labels-idx1-ubyte": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    },
    urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
)


# EMNIST split -> (training, test) examples
EMNIST_SIZES = {"balanced": (112800, 18800), "byclass": (697932, 116323), "bymerge": (697932, 116323),
                "digits": (240000, 40000), "letters": (124800, 20800), "mnist": (60000, 10000)}


def emnist(split: str) -> IdxSource:
    if split not in EMNIST_SIZES:
        raise UserError(f"unknown EMNIST split '{split}': choose one of {', '.join(EMNIST_SIZES)}")
    return IdxSource(
        name="emnist",
        files={part: (f"emnist-{split}-{part}-images-idx3-ubyte", f"emnist-{split}-{part}-labels-idx1-ubyte")
               for part in ("train", "test")},
        sizes=dict(zip(("train", "test"), EMNIST_SIZES[split])),
        sha256={},
        archive="https://biometrics.nist.gov/cs_links/EMNIST/gzip.zip",
        transposed=True,
    )


def generic(folder: str) -> IdxSource:
    """Any folder in MNIST's file layout (Fashion-MNIST, KMNIST, ...)."""
    return IdxSource(name=folder, files=MNIST.files, sizes={"train": None, "test": None}, sha256={})


def _find(folder: Path, stem: str) -> Path | None:
    for candidate in (folder / f"{stem}.gz", folder / stem):
        if candidate.is_file():
            return candidate
    return None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("SNNLSTM_OFFLINE") == "1"


def download(url: str, target: Path) -> None:
    """`url` into `target`, through a partial file so that an interrupted download leaves nothing."""
    log.info("downloading %s", url)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(target.suffix + ".part")
    with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
        shutil.copyfileobj(response, out)
    tmp.replace(target)


def fetch(source: IdxSource, folder: Path) -> None:
    """Download the missing files of `source` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    stems = [stem for pair in source.files.values() for stem in pair if _find(folder, stem) is None]
    if source.archive:
        archive = folder / Path(source.archive).name
        if not archive.exists():
            download(source.archive, archive)
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.namelist():
                if Path(member).name in {f"{stem}.gz" for stem in stems}:
                    (folder / Path(member).name).write_bytes(bundle.read(member))
        return
    for stem in stems:
        for mirror in source.urls:
            try:
                download(mirror + f"{stem}.gz", folder / f"{stem}.gz")
                break
            except OSError as error:
                log.warning("could not fetch %s from %s: %s", stem, mirror, error)


def load_split(source: IdxSource, data_dir: str | Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """(images [N, H, W] uint8, labels [N] int64) of one split, fetched if missing."""
    folder = Path(data_dir) / source.name
    stems = source.files[split]
    if any(_find(folder, stem) is None for stem in stems):
        if offline() or not (source.urls or source.archive):
            missing = ", ".join(f"{stem}(.gz)" for stem in stems if _find(folder, stem) is None)
            raise UserError(
                f"{source.name} is not in {folder} (missing {missing}) and cannot be downloaded here: "
                f"put the files there or set paths.data_dir to the folder that holds '{source.name}/'"
            )
        try:
            fetch(source, folder)
        except OSError as error:
            raise UserError(
                f"{source.name} is not in {folder} and downloading it failed ({error}): "
                f"put the files there or set paths.data_dir"
            )
    arrays = []
    for stem in stems:
        path = _find(folder, stem)
        if path is None:
            raise UserError(f"{folder / stem}(.gz) is still missing after the download: fetch it by hand")
        array, digest = read_idx(path)
        expected = source.sha256.get(stem)
        if expected and digest != expected:
            raise UserError(f"{path} does not match its known checksum (sha256 {digest[:12]}...): replace the file")
        arrays.append(array)
    images, labels = arrays
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise UserError(f"{folder}: {split} images {images.shape} and labels {labels.shape} do not match")
    size = source.sizes.get(split)
    if size is not None and len(images) != size:
        raise UserError(f"{folder}: the {split} split has {len(images)} examples, {source.name} has {size}")
    if source.transposed:
        images = images.transpose(0, 2, 1)
    return np.array(images, copy=True, order="C"), labels.astype(np.int64)


def write_idx(path: Path, array: np.ndarray) -> Path:
    """Write a uint8 array as an IDX file (gzip if the name ends in .gz): for tests
    and for converting other datasets into this layout."""
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    payload = header + array.tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".gz":
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as handle:
            handle.write(payload)
        payload = buffer.getvalue()
    path.write_bytes(payload)
    return path
