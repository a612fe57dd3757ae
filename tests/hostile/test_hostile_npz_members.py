"""The checkpoint's zip members, crafted by someone who has read the loader: a member that is
no .npy, a header that claims more than the member holds, a compression NumPy never writes,
many small members that each pass the ratio check, text no ``str`` can hold. Each is refused
in one line (CheckpointError) before anything large is allocated; a file written on a
big-endian machine is read as the same checkpoint."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np  # numpy-boundary: writing crafted files
import pytest

from scratchvae.backend import Backend
from scratchvae.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_model,
    restore_training,
    save_checkpoint,
)
from scratchvae.models import VAE
from scratchvae.optim import Adam


@pytest.fixture(scope="module")
def sound(tmp_path_factory) -> Path:
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(12, hidden=[8], latent=3, beta=0.5, backend=bk)
    opt = Adam(1e-2)
    for _ in range(3):
        _, grads = model.loss_and_grads(bk.uniform((5, 12)))
        opt.step(model.params, grads)
    path = tmp_path_factory.mktemp("npz-members") / "checkpoint.npz"
    history = [{"epoch": 1, "step": 3}]
    return save_checkpoint(path, model, opt, epoch=1, step=3, history=history)


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as z:
        return {i.filename: z.read(i) for i in z.infolist()}


def _npy(a: np.ndarray) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array(f, a, allow_pickle=False)
    return f.getvalue()


def _write(path: Path, members: dict[str, bytes], packed: dict[str, int] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, compress_type=(packed or {}).get(name, zipfile.ZIP_STORED))
    return path


def _claim_size(path: Path, name: str, size: int, packed: bool = False) -> None:
    """Make the central directory say that member ``name`` unpacks to ``size`` bytes (or,
    ``packed``, that it is stored in ``size`` bytes)."""
    data = bytearray(path.read_bytes())
    at = data.find(b"PK\x01\x02")
    while at >= 0:
        length = struct.unpack_from("<H", data, at + 28)[0]
        if data[at + 46 : at + 46 + length] == name.encode():
            struct.pack_into("<I", data, at + (20 if packed else 24), size)
        at = data.find(b"PK\x01\x02", at + 4)
    path.write_bytes(bytes(data))


def _refused(path: Path, *needles: str) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    text = str(info.value)
    assert "\n" not in text and text.endswith(("train again", "scratchvae train")), text
    for needle in needles:
        assert needle in text, (needle, text)
    return text


def _refused_within(limit: int, path: Path, *needles: str) -> None:
    """:func:`_refused`, holding under ``limit`` bytes of memory meanwhile (traced)."""
    tracemalloc.start()
    try:
        _refused(path, *needles)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < limit, peak


@pytest.mark.parametrize(
    "entry", ["__format__.npy", "meta.npy", "rng_state.npy", "param/encoder.0.W.npy", "junk"]
)
def test_a_member_that_is_no_npy_array_is_refused(sound, tmp_path, entry):
    # NumPy hands such a member over as its raw bytes: an AttributeError traceback followed
    members = {**_members(sound), entry: b"not an array at all"}
    _refused(_write(tmp_path / "c.npz", members), f"entry {entry} is not a NumPy array")


@pytest.mark.parametrize("entry", ["__format__", "meta", "rng_state"])
@pytest.mark.parametrize("codes", [[0x110000], [0x7B, 0xFFFFFFFF]])
def test_text_beyond_unicode_is_refused(sound, tmp_path, entry, codes):
    # a code point above U+10FFFF: str() of it raised SystemError (a traceback), or made
    # a str NumPy's own rules had refused
    beyond = np.array(codes, "<u4").view(f"<U{len(codes)}").reshape(())
    members = {**_members(sound), f"{entry}.npy": _npy(beyond)}
    said = ["no format marker"] if entry == "__format__" else [f"'{entry}'", "not Unicode"]
    _refused(_write(tmp_path / "c.npz", members), *said)


@pytest.mark.parametrize(
    "version",
    [np.array([0x110000], "<u4").view("<U1").reshape(()), np.arange(10_000.0), np.array("1")],
    ids=["beyond-unicode", "a-large-float-array", "text"],
)
def test_a_version_entry_of_another_kind_is_described_not_read(sound, tmp_path, version):
    # its values went through repr(tolist()): text beyond U+10FFFF raised SystemError (a
    # traceback), a large array was listed whole before the message was cut to 20 characters
    members = {**_members(sound), "__version__.npy": _npy(version)}
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(_write(tmp_path / "c.npz", members))
    text = str(info.value)
    assert "\n" not in text and len(text) < 400 and "format version (an entry of " in text, text


def test_a_header_that_claims_more_than_the_member_holds_allocates_nothing(sound, tmp_path):
    # NumPy allocates the header's shape before it reads a byte: 8 GB for a 200-byte member
    header = _npy(np.zeros(0, np.float32)).replace(b"(0,)", b"(2147483648,)")
    members = {**_members(sound), "junk.npy": header + b"\0" * 64}
    path = _write(tmp_path / "c.npz", members)
    _refused_within(50 << 20, path, "entry junk.npy", "8589934592 bytes")


def test_a_compression_numpy_never_writes_is_refused_before_it_unpacks(sound, tmp_path):
    # bzip2 unpacks all it is given at once: 64 MB from 300 bytes, whatever size the zip claims
    members = {**_members(sound), "junk.npy": _npy(np.zeros(16 << 20, np.float32))}
    path = _write(tmp_path / "c.npz", members, {"junk.npy": zipfile.ZIP_BZIP2})
    _claim_size(path, "junk.npy", 1 << 20)  # within the ratio the loader allows
    assert path.stat().st_size < 20_000
    _refused_within(16 << 20, path, "entry junk.npy", "bzip2")


def test_many_small_members_may_not_unpack_to_far_more_than_the_file(sound, tmp_path):
    # each member passed the per-member ratio (6.4 MB from 6 kB), together 1000 times the file
    blob = _npy(np.zeros(1_600_000, np.float32))
    members = {**_members(sound), **{f"junk{i}.npy": blob for i in range(12)}}
    packed = {f"junk{i}.npy": zipfile.ZIP_DEFLATED for i in range(12)}
    path = _write(tmp_path / "c.npz", members, packed)
    assert path.stat().st_size < 200_000
    _refused(path, "its entries unpack")


def test_a_sound_compressed_checkpoint_still_loads(sound, tmp_path):
    members = _members(sound)
    path = _write(tmp_path / "c.npz", members, dict.fromkeys(members, zipfile.ZIP_DEFLATED))
    assert load_checkpoint(path).epoch == 1


def test_a_checkpoint_written_big_endian_resumes_as_the_same_run(sound, tmp_path):
    # a big-endian machine's file: its optimizer state was refused as "float32[298], expected
    # float32[298]" (the byte order differed, the message could not say so)
    with np.load(sound, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    members = {f"{k}.npy": _npy(a.astype(a.dtype.newbyteorder(">"))) for k, a in arrays.items()}
    path = _write(tmp_path / "c.npz", members)
    model, ckpt = load_model(path)
    opt = Adam(1e-2)
    restore_training(ckpt, model, opt)
    for key, a in arrays.items():
        name = key.removeprefix("param/")
        if key.startswith("param/"):
            assert np.array_equal(model.params[name], a) and model.params[name].dtype.isnative
        elif key.startswith("optim/") and key != "optim/t":
            assert np.array_equal(opt.state[key.removeprefix("optim/")], a)
    assert opt.t == 3


def test_packed_sizes_the_file_does_not_hold_are_refused(sound, tmp_path):
    # the ratio checks trusted the packed sizes the zip claims: a member claiming 50 MB packed
    # unpacked its 200 MB (1000 times the file) before the read ran out of bytes
    members = {**_members(sound), "junk.npy": _npy(np.zeros(16 << 20, np.float32))}
    path = _write(tmp_path / "c.npz", members, {"junk.npy": zipfile.ZIP_DEFLATED})
    _claim_size(path, "junk.npy", 4 << 20, packed=True)  # claims 4 MB packed
    assert path.stat().st_size < 100_000
    _refused_within(16 << 20, path, "packed", f"the file holds {path.stat().st_size}")


def test_the_commands_in_a_real_process_say_one_line(sound, tmp_path):
    # what the user saw: an AttributeError traceback and exit status 1
    members = {**_members(sound), "meta.npy": b"not an array at all"}
    _write(tmp_path / "checkpoint.npz", members)
    before = (tmp_path / "checkpoint.npz").read_bytes()
    for argv in (["evaluate", str(tmp_path)], ["sample", str(tmp_path), "--out", "s.png"]):
        code = "import sys; from scratchvae.cli import main; sys.exit(main(sys.argv[1:]))"
        proc = subprocess.run(
            [sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tmp_path
        )
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "entry meta.npy is not a NumPy array" in lines[0], lines
    assert (tmp_path / "checkpoint.npz").read_bytes() == before
    assert not (tmp_path / "s.png").exists()


def test_fortran_ordered_arrays_resume_as_the_same_run(sound, tmp_path):
    # already sound (kept so): NumPy reads a Fortran-ordered .npy as a transposed view, and
    # the parameters are copied into the model's own buffer
    with np.load(sound, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    fortran = {k: np.asfortranarray(a) if a.ndim == 2 else a for k, a in arrays.items()}
    assert not fortran["param/encoder.0.W"].flags.c_contiguous
    members = {f"{k}.npy": _npy(a) for k, a in fortran.items()}
    model, ckpt = load_model(_write(tmp_path / "c.npz", members))
    restore_training(ckpt, model, Adam(1e-2))
    for key, a in arrays.items():
        if key.startswith("param/"):
            assert np.array_equal(model.params[key.removeprefix("param/")], a)
