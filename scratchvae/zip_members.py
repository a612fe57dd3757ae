"""What an ``.npz`` archive's zip directory claims, checked before any member is unpacked.

Shared by the checkpoint reader (:mod:`scratchvae.checkpoint_file`) and the data loader
(:mod:`scratchvae.data.load`): the zip directory is the file's own word about itself, so the
sizes it gives are held to the file's real size, and only the two compressions NumPy writes
are read (``np.savez``: stored, ``np.savez_compressed``: deflate). bzip2 and LZMA unpack all
that one read hands them at once, whatever size the directory claims: a few hundred bytes of
bzip2 made the loader hold 445 MB before the member's checksum failed.
"""

from __future__ import annotations

import zipfile

__all__ = ["UnsupportedArchive", "check_directory"]

_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_OTHER_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}


class UnsupportedArchive(ValueError):
    """A member in a compression NumPy never writes: not damage, a file to save again."""


def check_directory(infos: list[zipfile.ZipInfo], size: int) -> None:
    """Raise ValueError (one line) when the members' packed sizes together claim more than the
    file's ``size`` bytes, :class:`UnsupportedArchive` when a member is compressed in a way
    NumPy never writes."""
    claimed = sum(i.compress_size for i in infos)
    if claimed > size:
        raise ValueError(f"its entries claim {claimed} packed bytes, the file holds {size}")
    for info in infos:
        if info.compress_type not in _METHODS:
            how = _OTHER_METHODS.get(info.compress_type, f"method {info.compress_type}")
            raise UnsupportedArchive(
                f"entry {info.filename} is compressed with {how}, which NumPy never writes"
            )
