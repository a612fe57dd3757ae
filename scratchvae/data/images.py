"""A folder of images as a data set: :func:`load_image_folder`.

Every image is read with Pillow (which matplotlib depends on) as 8-bit grey levels 0..255:
grey, colour, palette and 1-bit images convert exactly. Deeper images (16-bit grey, a PNG of
16 bits a channel, 32-bit, floating point) are refused, since converting them to 8 bits clips or
truncates their values; so are images past Pillow's decompression-bomb limit.

This module is an I/O boundary, so it uses NumPy directly; the arrays it returns are NumPy arrays
on the host.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np  # numpy-boundary: images read from files

from .dataset import DataError, Dataset, check_regular_file, dataset_from_array
from .idx import IDX_SETS

__all__ = ["IMAGE_SUFFIXES", "load_image_folder", "read_gray"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".pgm", ".tif", ".tiff")
#: Pillow's modes of more than 8 bits per pixel: "I;16" and its byte orders, "I" (32-bit), "F".
_DEEP_MODES = ("I", "F")


def read_gray(path: Path) -> np.ndarray:
    """One image as a uint8 (H, W) array of grey levels, or one-line :class:`DataError`."""
    from PIL import Image, UnidentifiedImageError

    check_regular_file(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                deep = im.mode.split(";")[0] in _DEEP_MODES or _png_bit_depth(im, path) == 16
                if deep:
                    raise DataError(
                        f"{path} is an image of mode {im.mode}, not 8-bit: its values would be "
                        "clipped to 0..255; convert the images to 8-bit grey levels, or save "
                        "the data as a .npy array scaled to [0, 1]"
                    )
                return np.asarray(im.convert("L"))
    except (Image.DecompressionBombWarning, Image.DecompressionBombError):  # told by its header
        raise DataError(
            f"{path} has more pixels than Pillow decodes safely ({Image.MAX_IMAGE_PIXELS:,}; a "
            "decompression bomb?); resize it"
        ) from None
    except (OSError, UnidentifiedImageError) as exc:
        raise DataError(f"could not read image {path} ({exc})") from None


def _png_bit_depth(im: object, path: Path) -> int | None:
    """A PNG's bits per channel (its IHDR's byte 24), None for other formats: Pillow opens a
    colour PNG of 16 bits a channel as mode RGB and keeps only each value's high byte."""
    if getattr(im, "format", None) != "PNG":
        return None
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head[12:16] == b"IHDR" else None


def _archives_hint(folder: Path) -> str:
    """'; it holds mnist-train.npz: pass --data mnist --data-dir FOLDER ...' for a folder of
    MNIST's or Fashion-MNIST's archives (read by name from a data folder), else ''."""
    for name in IDX_SETS:
        held = sorted(p.name for p in folder.glob(f"{name}-*.npz"))
        if held:
            return (
                f"; it holds {', '.join(held)}: pass --data {name} --data-dir {folder} (or "
                "one .npz as --data)"
            )
    return ""


def load_image_folder(folder: Path, likelihood: str) -> Dataset:
    """Every image in ``folder`` (sorted by name), grayscale, all the same size, loaded whole."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"{folder} holds no IDX files and no images ({', '.join(IMAGE_SUFFIXES)}); "
            f"point at a .npy/.npz file or a folder of images{_archives_hint(folder)}"
        )
    images = [read_gray(p) for p in files]
    for path, image in zip(files, images, strict=True):
        if image.shape != images[0].shape:
            raise DataError(
                f"images in {folder} differ in size: {files[0].name} is {images[0].shape} but "
                f"{path.name} is {image.shape}; resize them to one size"
            )
    return dataset_from_array(np.stack(images), None, folder.name, likelihood)
