"""A resumed run continues on the data it was trained on: its checkpoint records the data's
fingerprint (scratchvae/fingerprint.py), and a resume on other data is refused in one line
(it used to continue silently, from the library and from the command line). A run made by
fit() and resumed with --data records that data, as a fresh command-line run does."""

from __future__ import annotations

import numpy as np  # numpy-boundary: writing data files and crafted checkpoints
import pytest
from run_files import rewrite_checkpoint

from scratchvae.backend import Backend
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.fingerprint import data_fingerprint
from scratchvae.models import VAE
from scratchvae.resume import ResumeMismatch
from scratchvae.train import TrainConfig, fit

FLAGS = ["--hidden", "8", "--latent", "2", "--batch-size", "50", "--no-progress", "--no-figures"]


def _grey(seed: int, n: int = 100) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 64), dtype=np.uint8)


def _vae() -> VAE:
    return VAE(64, hidden=[8], latent=2, backend=Backend())


def _config(out, epochs: int) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=50, progress=False, out_dir=str(out))


def _files(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name != ".lock"}


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err and "Traceback" not in "\n".join(err)
    return err[-1]


def test_the_same_data_has_one_fingerprint_however_it_is_given(tmp_path):
    x = _grey(0)
    np.save(tmp_path / "x.npy", x)
    from_array = data_fingerprint(dataset_from_array(x))
    from_file = data_fingerprint(load_dataset(str(tmp_path / "x.npy")))  # memory-mapped uint8
    as_floats = data_fingerprint(dataset_from_array(np.divide(x, 255, dtype=np.float32)))
    assert from_array == from_file == as_floats
    assert from_array["shape"] == [100, 64] and len(from_array["blake2b"]) == 32
    y = x.copy()
    y[99, 63] ^= 1  # one grey level of one pixel
    assert data_fingerprint(dataset_from_array(y))["blake2b"] != from_array["blake2b"]


@pytest.mark.parametrize(
    "other, differs",
    [
        (_grey(1), "the same shape, 100 x 64, but other values"),
        (_grey(0, 120), "100 x 64 there, 120 x 64 here"),
    ],
)
def test_fit_refuses_to_resume_on_other_data(tmp_path, other, differs):
    fit(_vae(), _grey(0), _config(tmp_path, 1))
    before = _files(tmp_path)
    model = _vae()
    params = model.params.flat.copy()
    with pytest.raises(ResumeMismatch) as info:
        fit(model, other, _config(tmp_path, 2), resume=True)
    assert str(info.value) == (
        f"{tmp_path / 'checkpoint.npz'} was trained on other data ({differs}); resume it on the "
        "data it was trained on, or start a new run in another out_dir (--out DIR)"
    )
    assert _files(tmp_path) == before and np.array_equal(model.params.flat, params)
    # the data it was trained on, given as a Dataset this time, resumes it
    history = fit(_vae(), dataset_from_array(_grey(0)), _config(tmp_path, 2), resume=True)
    assert [r["epoch"] for r in history] == [1, 2]


def test_a_checkpoint_without_a_fingerprint_resumes_as_before(tmp_path):
    # written before data was fingerprinted: no data_fingerprint in its meta
    fit(_vae(), _grey(0), _config(tmp_path, 1))
    rewrite_checkpoint(tmp_path, lambda meta: meta.pop("data_fingerprint"))
    assert load_checkpoint(tmp_path).data_fingerprint is None
    history = fit(_vae(), _grey(1), _config(tmp_path, 2), resume=True)  # as before: no check
    assert [r["epoch"] for r in history] == [1, 2]
    fingerprint = data_fingerprint(dataset_from_array(_grey(1)))
    assert load_checkpoint(tmp_path).data_fingerprint == fingerprint  # recorded from now on


def test_the_cli_refuses_to_resume_on_a_data_file_that_changed(tmp_path, capsys):
    data, out = tmp_path / "a.npy", tmp_path / "run"
    np.save(data, _grey(0))
    assert main(["train", *FLAGS, "--data", str(data), "--epochs", "1", "--out", str(out)]) == 0
    before = _files(out)
    np.save(data, _grey(1))  # the same file name, other images
    assert main(["train", "--resume", "--out", str(out), "--epochs", "2", *FLAGS[-2:]]) == 2
    assert _error_line(capsys) == (
        f"scratchvae: error: {out / 'checkpoint.npz'} was trained on other data (the same shape, "
        "100 x 64, but other values); resume it on the data it was trained on, or start a new "
        "run in another out_dir (--out DIR)"
    )
    assert _files(out) == before


def test_a_cli_resume_of_a_fit_run_records_its_data(tmp_path, capsys):
    # fit() records no data path: a resume with --data did not record it either, so every later
    # --resume (and evaluate, plot, ...) needed --data again
    x = _grey(0)
    np.save(tmp_path / "mine.npy", x)
    np.save(tmp_path / "other.npy", _grey(1))
    out = tmp_path / "run"
    fit(_vae(), x, _config(out, 1))  # the uint8 array itself; --data memory-maps the file
    resume = ["train", "--resume", "--out", str(out), *FLAGS[-2:]]
    assert main([*resume, "--epochs", "2", "--data", str(tmp_path / "other.npy")]) == 2
    assert "was trained on other data (the same shape" in _error_line(capsys)
    assert load_checkpoint(out).train_config["data"] is None  # the refusal recorded nothing
    assert main([*resume, "--epochs", "2", "--data", str(tmp_path / "mine.npy")]) == 0
    assert load_checkpoint(out).train_config["data"] == str(tmp_path / "mine.npy")
    assert main([*resume, "--epochs", "3"]) == 0  # no --data: the run names it now
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == 3 and ckpt.train_config["data"] == str(tmp_path / "mine.npy")
    capsys.readouterr()
    assert main(["evaluate", str(out), "--iw-samples", "2", "--split", "train"]) == 0


def test_a_run_whose_data_file_moved_resumes_from_its_new_place(tmp_path, capsys):
    # the path comparison refused the moved file; the fingerprint now says it is the same data
    old, new, other, out = (tmp_path / n for n in ("a.npy", "b.npy", "c.npy", "run"))
    np.save(old, _grey(0))
    assert main(["train", *FLAGS, "--data", str(old), "--epochs", "1", "--out", str(out)]) == 0
    old.rename(new)
    np.save(other, _grey(1))
    before = _files(out)
    resume = ["train", "--resume", "--out", str(out), *FLAGS[-2:]]
    for command, where in (([*resume, "--epochs", "2"], "where it is now"),
                           (["evaluate", str(out)], "held-out data")):  # fmt: skip
        assert main(command) == 2  # (it was "unknown data set ...; choose digits, mnist, ...")
        line = _error_line(capsys)
        assert f"was trained on {old}, which is no longer there; pass --data with {where}" in line
    assert main([*resume, "--epochs", "2", "--data", str(other)]) == 2  # moved, but not the same
    assert "was trained on other data (the same shape" in _error_line(capsys)
    assert _files(out) == before
    assert main([*resume, "--epochs", "2", "--data", str(new)]) == 0
    assert load_checkpoint(out).train_config["data"] == str(new)  # where it lives now
    assert main([*resume, "--epochs", "3"]) == 0  # no --data: the run names the new place
    assert load_checkpoint(out).epoch == 3


def test_a_moved_named_data_set_is_still_compared_by_name(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *FLAGS, "--epochs", "1", "--out", str(out)]) == 0  # the digits
    np.save(tmp_path / "a.npy", _grey(0))
    resume = ["train", "--resume", "--out", str(out), "--epochs", "2", *FLAGS[-2:]]
    assert main([*resume, "--data", str(tmp_path / "a.npy")]) == 2
    assert "was trained with --data digits; you asked for --data" in _error_line(capsys)
