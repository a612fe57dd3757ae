"""Loading a data set by name or path: :func:`load_dataset`, the one entry point.

``spec`` is ``"digits"`` (the UCI digits embedded in the package, ``scratchvae/_data/digits.npz``),
``"mnist"`` / ``"fashion-mnist"`` (local IDX files or ``<name>-<split>.npz`` archives under the
data root, else downloaded: :mod:`scratchvae.data.idx`), or a path: a ``.npy`` file
(memory-mapped), a ``.npz`` file, a folder of IDX files, or a folder of images. Every one
becomes a :class:`~scratchvae.data.dataset.Dataset` through
:func:`~scratchvae.data.dataset.dataset_from_array`.

This module is an I/O boundary, so it uses NumPy directly; the arrays it returns are NumPy arrays
on the host.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: reading .npy/.npz files and images

from ..atomic import path_exists
from ..zip_members import UnsupportedArchive, check_directory
from .dataset import (
    DataError,
    Dataset,
    check_likelihood,
    check_memory,
    check_n_features,
    check_regular_file,
    check_split,
    dataset_from_array,
)
from .idx import (
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    IDX_SETS,
    IDX_STEMS,
    REFETCH,
    data_root,
    fetch_idx,
    idx_folder,
    local_idx,
    read_idx,
)
from .images import load_image_folder
from .labels import official_labels
from .splits import holdout

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TEST_SIZE", "NoSuchSplit", "load_dataset", "named_dataset"]


class NoSuchSplit(DataError):
    """The user's own file or folder is one data set: it has no test split. A class of its
    own so that the command line can name its flags (--split, --data) instead."""

    def __init__(self, path: Path, split: str, message: str | None = None) -> None:
        super().__init__(
            message
            or f"{path} is one data set with no {split!r} split; use the split train (--split "
            "train, split='train'), and pass a held-out part as a file of its own"
        )
        self.path, self.split = path, split


# --------------------------------------------------------------------------------------------
# The embedded digits
# --------------------------------------------------------------------------------------------

DIGITS_TEST_SIZE = 297
DIGITS_SPLIT_SEED = 0


def _load_digits(split: str, likelihood: str) -> Dataset:
    """The UCI digits: 1,797 images of 8x8, grey levels 0..16 scaled by 1/16.

    There is no official test set: ``test`` is a fixed held-out part, the last 297 of the
    permutation of seed 0 (:func:`holdout`), ``train`` the other 1,500, ``all`` all 1,797.
    """
    check_split(split, ("train", "test", "all"), "digits")
    with (resources.files("scratchvae") / "_data" / "digits.npz").open("rb") as f:
        with np.load(f) as z:
            x, y = z["x"], z["y"]
    if split != "all":
        train, test = holdout(len(x), DIGITS_TEST_SIZE, DIGITS_SPLIT_SEED)
        keep = train if split == "train" else test
        x, y = x[keep], y[keep]
    ds = dataset_from_array(np.divide(x, 16, dtype=np.float32), y, "digits", likelihood)
    ds.description = f"UCI digits {split} ({ds.n} x 64), grey levels in [0, 1] (0..16 / 16)"
    return ds


# --------------------------------------------------------------------------------------------
# MNIST and Fashion-MNIST: local archives, else IDX files
# --------------------------------------------------------------------------------------------


_NPY_MAGIC = b"\x93NUMPY"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")  # a zip file's first member, or an empty zip
# What a damaged archive raises while it is read: zipfile's own error, zlib's (a damaged deflate
# stream), NumPy's loader (EOFError, ValueError), unsupported or encrypted members
# (NotImplementedError, RuntimeError), offsets past any file (OverflowError), the file system.
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError, ValueError, NotImplementedError,
           RuntimeError, OverflowError, OSError)  # fmt: skip


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if "max_header_size" in text:  # NumPy's words advise allow_pickle=True: never relay them
        return "its .npy header is longer than NumPy reads safely (10,000 bytes)"
    return text[:200] or type(exc).__name__


def _head(path: Path) -> bytes:
    """The first bytes of ``path``, enough to tell a .npy from a zip file."""
    with open(path, "rb") as f:
        return f.read(len(_NPY_MAGIC))


def _npz_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, advice: str) -> np.ndarray:
    """One array of an archive, read whole now, so a damaged member fails here and not later.

    Its header's shape and dtype are checked against the member's size and the memory available
    before anything is allocated, and reading to the end checks the member's CRC."""
    with zf.open(info) as member:  # (the sizes the zip claims: checked by check_directory)
        version = np.lib.format.read_magic(member)
        if version not in ((1, 0), (2, 0)):
            raise ValueError(f"member {info.filename!r} is .npy format {version}, not 1.0 or 2.0")
        read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
        shape, _, dtype = read_header(member)
        _refuse_objects(dtype, f"{path}: member {info.filename!r}", "np.savez(path, x=...)")
        held, declared = info.file_size - member.tell(), math.prod(shape) * dtype.itemsize
        if held != declared:
            raise ValueError(
                f"member {info.filename!r} announces shape {shape} ({declared} bytes) but "
                f"holds {held} bytes"
            )
        check_memory(declared, f"{path}: member {info.filename!r} announces shape {shape}", advice)
    with zf.open(info) as member:
        array = np.lib.format.read_array(member, allow_pickle=False)
        member.read(1)  # to its end (no byte is left: the sizes agree): zipfile checks the CRC
    return array


def _refuse_objects(dtype: np.dtype, what: str, save: str) -> None:
    """Raise :class:`DataError` when ``dtype`` holds Python objects: such a file is not
    damaged (NumPy's own refusal, read among the damage, told the user to replace it), it
    holds something else than numbers, which only a pickle could load."""
    if dtype.hasobject:
        raise DataError(
            f"{what} holds Python objects (dtype {dtype}), not numbers; save the data as one "
            "numeric array, its rows of one length (pad or drop ragged ones), e.g. "
            f"{save.replace('...', 'np.asarray(x, dtype=np.float32)')}"
        )


def _npz_arrays(path: Path, advice: str) -> dict[str, np.ndarray]:
    """Every array of the .npz archive ``path`` by name, read now."""
    head = _head(path)
    if head == _NPY_MAGIC:
        raise DataError(f"{path} is a .npy file, not an .npz archive; rename it to end in .npy")
    if head[:4] not in _ZIP_MAGICS:
        what = "is empty" if not head else "is not an .npz archive (it is not a zip file)"
        raise DataError(f"{path} {what}; {advice}")
    with zipfile.ZipFile(path) as zf:
        check_directory(zf.infolist(), path.stat().st_size)  # before any member is unpacked
        return {
            info.filename.removesuffix(".npy"): _npz_member(zf, info, path, advice)
            for info in zf.infolist()
            if not info.is_dir()
        }


def _read_npz(path: Path, advice: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x, y) from an .npz: key ``x`` (else its single array) and optional ``y``; loaded whole.

    A truncated or damaged archive raises :class:`DataError`, its message ending in ``advice``.
    """
    try:
        arrays = _npz_arrays(path, advice)
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    except MemoryError:
        raise DataError(f"{path} holds arrays too large for this machine's memory") from None
    except UnsupportedArchive as exc:  # not damaged: written by another tool than NumPy
        raise DataError(f"{path}: {exc}; save it with np.savez or np.savez_compressed") from None
    except _DAMAGE as exc:
        raise DataError(f"{path} is truncated or damaged ({_reason(exc)}); {advice}") from None
    if not arrays:
        raise DataError(f"{path} holds no arrays; save the data as array 'x' (labels 'y')")
    key = "x" if "x" in arrays else (next(iter(arrays)) if len(arrays) == 1 else None)
    if key is None:
        raise DataError(f"{path} holds arrays {list(arrays)}; name the data array 'x' (labels 'y')")
    return arrays[key], (arrays.get("y") if key == "x" else None)


def _load_standard(
    name: str,
    split: str,
    data_dir: Any,
    download: bool,
    likelihood: str,
    base_url: str | None,
    progress: bool | None,
) -> Dataset:
    """MNIST or Fashion-MNIST: local IDX files, else a local <name>-<split>.npz, else download."""
    title = IDX_SETS[name][0]
    check_split(split, ("train", "test"), title)
    root = data_root(data_dir)
    if not all(local_idx(idx_folder(root, name), stem) for stem in IDX_STEMS[split]):
        for npz in (root / name / f"{name}-{split}.npz", root / f"{name}-{split}.npz"):
            if npz.is_file():
                advice = "replace it, or delete it so the official IDX files are downloaded instead"
                x, y = _read_npz(npz, advice)
                _check_counts(x, y, f"{title} {split} in {npz}", advice)
                return _standard_dataset(x, y, name, title, split, likelihood)
    images, labels = fetch_idx(name, split, data_dir, download, base_url, progress=progress)
    x = read_idx(images, IDX_IMAGES_MAGIC, advice=REFETCH)
    y = read_idx(labels, IDX_LABELS_MAGIC, advice=REFETCH)
    where = f"the {title} {split} files in {images.parent}"
    advice = (
        "they disagree: delete them so they are downloaded again, or replace them with the "
        "official files"
    )
    _check_counts(x, y, where, advice)
    return _standard_dataset(x, y, name, title, split, likelihood)


def _check_counts(x: np.ndarray, y: Any, where: str, advice: str) -> None:
    """DataError unless there are as many labels as images (``where``: the files they are in;
    ``advice``: what to do, for the user's own files not "fetch it again")."""
    if y is not None and len(y) != len(x):
        raise DataError(f"{where}: {len(x)} images but {len(y)} labels; {advice}")


def _standard_dataset(
    x: np.ndarray, y: Any, name: str, title: str, split: str, likelihood: str
) -> Dataset:
    ds = dataset_from_array(x, y, f"{title} {split}", likelihood)
    ds.name = name
    ds.description = f"{title} {split} ({ds.n} x {ds.n_features}), grey levels in [0, 1]"
    return ds


# --------------------------------------------------------------------------------------------
# The user's own files
# --------------------------------------------------------------------------------------------


def _load_idx_folder(path: Path, split: str, likelihood: str) -> Dataset:
    """The images and labels of ``split`` from a folder that holds IDX files (official names,
    gzipped or raw); a file of the pair missing is named, not taken for no IDX files at all."""
    if split == "all" and not any(local_idx(path, stem) for stem in IDX_STEMS["test"]):
        split = "train"  # a folder of one split: all of it is that
    check_split(split, tuple(IDX_STEMS), f"the folder of IDX files {path}")
    stems = IDX_STEMS[split]
    missing = [f"{stem}(.gz)" for stem in stems if local_idx(path, stem) is None]
    if missing:  # named; none of the split's files: a data set without it, as a file is
        held = sorted(
            p.name for pair in IDX_STEMS.values() for s in pair if (p := local_idx(path, s))
        )
        fix = ", or use the split train (--split train, split='train')" if split == "test" else ""
        error = partial(NoSuchSplit, path, split) if len(missing) == 2 else DataError
        raise error(
            f"{path} holds {', '.join(held)} but not {' and '.join(missing)}, which the {split} "
            f"split needs; put the {split} images and labels there{fix}"
        )
    images, labels = (local_idx(path, stem) for stem in stems)
    assert images is not None and labels is not None  # none is missing (above)
    x, y = read_idx(images, IDX_IMAGES_MAGIC), read_idx(labels, IDX_LABELS_MAGIC)
    where = f"the IDX files in {path} ({images.name}, {labels.name})"
    advice = "they disagree: replace them with the images and labels of one data set"
    _check_counts(x, y, where, advice)
    # MNIST's or Fashion-MNIST's by its labels, whatever the folder's name (the class names of
    # a figure's legend follow the data set's name); a user's own labels: the folder's name
    name = official_labels(y) or path.name
    return _standard_dataset(x, y, name, path.name, split, likelihood)


def _load_path(path: Path, split: str, likelihood: str) -> Dataset:
    """A .npy (memory-mapped), .npz, a folder of IDX files, or a folder of images."""
    all_stems = [stem for pair in IDX_STEMS.values() for stem in pair]
    if path.is_dir() and any(local_idx(path, stem) for stem in all_stems):
        return _load_idx_folder(path, split, likelihood)
    if split not in ("train", "all"):
        raise NoSuchSplit(path, split)
    if path.is_dir():
        return load_image_folder(path, likelihood)
    check_regular_file(path)
    if path.suffix == ".npz":
        x, y = _read_npz(path, "replace it with an intact copy (np.savez writes one)")
        ds = dataset_from_array(x, y, path.name, likelihood)
        ds.name = official_labels(y) or ds.name  # Fashion-MNIST's legend, as for IDX files
        return ds
    if path.suffix != ".npy":
        raise DataError(f"cannot read {path}: expected a .npy or .npz file or a folder of images")
    return dataset_from_array(_read_npy(path), None, path.name, likelihood)


def _read_npy(path: Path) -> np.ndarray:
    """A .npy file, memory-mapped (the mapping checks its size against its header); one in
    Fortran order is read into memory in C order, since its rows are not contiguous on disk."""
    try:
        head = _head(path)
        if head[:4] in _ZIP_MAGICS:
            raise DataError(f"{path} is an .npz archive, not a .npy file; rename it to end in .npz")
        if head != _NPY_MAGIC:  # else NumPy takes it for a pickle, and advises loading it unsafely
            why = "it is empty" if not head else "it does not begin with the .npy header"
            raise DataError(
                f"could not read {path} as a NumPy .npy file ({why}); replace it with an intact "
                "copy (np.save writes one)"
            )
        with open(path, "rb") as f:  # NumPy's own refusal reads as damage (see _refuse_objects)
            version = np.lib.format.read_magic(f)
            if version in ((1, 0), (2, 0)):  # 3.0 (UTF-8 field names): np.load says it all
                read_header = getattr(np.lib.format, f"read_array_header_{version[0]}_0")
                _refuse_objects(read_header(f)[2], str(path), "np.save(path, ...)")
        x = np.load(path, mmap_mode="r", allow_pickle=False)
        if x.ndim > 1 and not x.flags.c_contiguous:  # Fortran order: its rows are scattered
            check_memory(
                x.nbytes + 4 * x.size,  # and their float32 copy
                f"{path} is stored in Fortran order, so it is read into memory",
                "save it in C order (np.save(path, np.ascontiguousarray(x))) to read it from "
                "disk batch by batch",
            )
            return np.ascontiguousarray(x)
        return x
    except DataError:
        raise
    except PermissionError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror}); check its permissions") from None
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(
            f"could not read {path} as a NumPy .npy file ({_reason(exc)}); replace it with an "
            "intact copy (np.save writes one)"
        ) from None


# --------------------------------------------------------------------------------------------
# The entry point
# --------------------------------------------------------------------------------------------


def named_dataset(spec: str) -> str | None:
    """The data set ``spec`` names (``digits``, ``mnist``, ``fashion-mnist``, in any case, with
    ``_`` for ``-``), or None for a path."""
    key = spec.strip().lower().replace("_", "-")
    return key if key == "digits" or key in IDX_SETS else None


def load_dataset(
    spec: str,
    split: str = "train",
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    likelihood: str = "bernoulli",
    *,
    base_url: str | None = None,
    expected_features: int | None = None,
    progress: bool | None = None,
) -> Dataset:
    """Load ``spec``: ``digits``, ``mnist``, ``fashion-mnist``, or a path (file or folder).

    ``split``: ``train`` or ``test`` (digits: a fixed held-out 297 of the 1,797, see
    :func:`_load_digits`; also ``all``). A single file or image folder has no test split.
    ``.npy`` files are memory-mapped (``np.load(mmap_mode="r")``) and read batch by batch;
    ``.npz`` files cannot be memory-mapped when compressed, so they are loaded whole (key ``x``,
    else the single array; optional ``y``). uint8 data is scaled by 1/255. With the Bernoulli
    likelihood, values must lie in [0, 1]. ``expected_features``, when given, must match D.
    """
    check_likelihood(likelihood)
    if not isinstance(spec, (str, os.PathLike)):
        raise TypeError(
            f"load_dataset takes a name or a path, got a {type(spec).__name__}; wrap your own "
            "array with scratchvae.data.dataset_from_array(x), or pass it to fit() as it is"
        )
    key = named_dataset(str(spec))
    if key == "digits":
        ds = _load_digits(split, likelihood)
    elif key in IDX_SETS:
        ds = _load_standard(key, split, data_dir, download, likelihood, base_url, progress)
    elif path_exists(Path(spec).expanduser()):
        ds = _load_path(Path(spec).expanduser(), split, likelihood)
    else:
        raise DataError(
            f"unknown data set {spec!r} and no such file or folder; choose digits, mnist, "
            "fashion-mnist, or a path to a .npy/.npz file or a folder of images"
        )
    if expected_features is not None:
        check_n_features(ds, expected_features, "the model")
    return ds
