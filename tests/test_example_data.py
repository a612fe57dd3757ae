"""Which test split an example evaluates on: MNIST's own, or (a user's file, which has none)
the last 10% of the file; never training images standing in for MNIST's test set."""

import numpy as np
import pytest
from dead_port import dead_url
from example_cases import import_example


def _mnist_train(folder):
    """A small stand-in for mnist-train.npz: 40 random 28 x 28 uint8 images with labels."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(40, 28, 28), dtype=np.uint8)
    y = rng.integers(0, 10, size=40, dtype=np.uint8)
    (folder / "mnist").mkdir(parents=True)
    np.savez(folder / "mnist" / "mnist-train.npz", x=x, y=y)
    return folder / "mnist"


def _setup(tmp_path, argv):
    _, common = import_example("sparse_ae")
    return common, ["--n-train", "10", "--out", str(tmp_path / "out"), *argv]


def test_a_damaged_mnist_test_file_is_an_error_not_training_rows(tmp_path, capsys):
    """The test split's error (here a damaged mnist-test.npz) was taken for "this file has no
    test split": the last 10% of MNIST's TRAINING set was evaluated as its test set, silently."""
    mnist = _mnist_train(tmp_path / "data")
    cut = (mnist / "mnist-train.npz").read_bytes()
    (mnist / "mnist-test.npz").write_bytes(cut[: len(cut) // 2])  # truncated
    common, argv = _setup(tmp_path, ["--data", "mnist", "--data-dir", str(tmp_path / "data")])
    with pytest.raises(ValueError, match="mnist-test.npz"):
        common.setup("sparse_ae", argv, common.parser("t"), {"digits": 1, "other": 1})
    assert "test rows" not in capsys.readouterr().out  # no first line: nothing was loaded


def test_a_missing_mnist_test_split_is_downloaded_or_an_error(tmp_path, monkeypatch):
    mnist = _mnist_train(tmp_path / "data")
    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", dead_url())  # every download refused
    common, argv = _setup(tmp_path, ["--data", "mnist", "--data-dir", str(mnist.parent)])
    with pytest.raises(ValueError, match="could not download .*t10k-images"):
        common.setup("sparse_ae", argv, common.parser("t"), {"digits": 1, "other": 1})


def test_a_users_file_has_its_last_tenth_held_out_as_the_test_split(tmp_path, capsys):
    x = np.random.default_rng(1).random((50, 8, 8)).astype(np.float32)
    np.save(tmp_path / "mine.npy", x)
    common, argv = _setup(tmp_path, ["--data", str(tmp_path / "mine.npy")])
    s = common.setup("sparse_ae", argv, common.parser("t"), {"digits": 1, "other": 1})
    assert s.test.n == 5 and np.array_equal(s.test.get_batch(slice(None)), x[45:].reshape(5, 64))
    assert "the last 5 of its 50 rows held out as the test split" in capsys.readouterr().out


def test_a_users_folder_of_idx_training_files_has_its_last_tenth_held_out(tmp_path, capsys):
    """A folder holding only the train-*-idx files is a data set without a test split, as a
    file is (it was refused, advising a --split flag the examples do not have)."""
    import gzip

    from scratchvae.data.idx import IDX_IMAGES_MAGIC, IDX_LABELS_MAGIC

    folder = tmp_path / "idxtrain"
    folder.mkdir()
    x = np.random.default_rng(2).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    y = np.arange(30, dtype=np.uint8) % 10
    for name, magic, a in [("train-images-idx3-ubyte.gz", IDX_IMAGES_MAGIC, x),
                           ("train-labels-idx1-ubyte.gz", IDX_LABELS_MAGIC, y)]:  # fmt: skip
        header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in a.shape)
        (folder / name).write_bytes(gzip.compress(header + a.tobytes()))
    common, argv = _setup(tmp_path, ["--data", str(folder)])
    s = common.setup("sparse_ae", argv, common.parser("t"), {"digits": 1, "other": 1})
    assert s.test.n == 3 and "the last 3 of its 30 rows held out" in capsys.readouterr().out


def test_a_figure_that_cannot_be_written_is_named_in_the_output_folder(
    tmp_path, capsys, monkeypatch
):
    """A full disk named the hidden staging folder's file (`.unfinished-PID-.../x.png`),
    which the failed run removes; the figure is named where it goes (its old copy intact)."""
    import errno

    import scratchvae.atomic

    module, common = import_example("sparse_ae")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(scratchvae.atomic.os, "fsync", full)
    out = tmp_path / "out"
    out.mkdir()
    (out / "decoder_features.png").write_bytes(b"the earlier run's")
    with pytest.raises(SystemExit) as exit_:
        common.run(module.main, ["--fast", "--out", str(out)])
    assert exit_.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert ".unfinished-" not in line, line
    assert line.startswith("sparse_ae.py: error: [Errno 28] No space left on device; ")
    assert line.endswith(f"{out / 'decoder_features.png'}'")
    assert [p.name for p in out.iterdir()] == ["decoder_features.png"]  # no staging folder
    assert (out / "decoder_features.png").read_bytes() == b"the earlier run's"


def test_the_sparse_aes_training_line_says_how_its_loss_weighs_the_penalty(tmp_path, capsys):
    """'train_loss 134.900, train_recon 41.923, train_sparsity 30.992' did not add up: the
    loss is recon + beta sparsity (beta 3), which no line said."""
    module, _ = import_example("sparse_ae")
    module.main(["--fast", "--beta", "2.5", "--out", str(tmp_path)])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "train_loss" in x]
    assert line.startswith("  SparseAE (loss = recon + 2.5 sparsity): 2 epochs in ")


def test_the_iwae_snr_training_line_says_its_training_loss_is_the_iwae_bound(tmp_path, capsys):
    """'train_loss 37.874, train_recon 39.246' read as a loss below its own recon term."""
    module, _ = import_example("iwae_snr")
    module.main(["--fast", "--train-k", "4", "--ks", "1", "--out", str(tmp_path)])
    (line,) = [x for x in capsys.readouterr().out.splitlines() if "train_loss" in x]
    assert line.startswith("  VAE (train_loss: -L_4, the IWAE bound): 2 epochs in ")


def test_imputation_of_rows_that_are_not_images_hides_half_of_each_row(
    tmp_path, capsys, monkeypatch
):
    """On (N, D) rows, drawn as 1 x D strips, "the bottom half" of one row of pixels was all of
    it: every feature hidden, nothing to condition on, and the table still said "bottom half".
    A strip's second half is hidden instead, and the table says so."""
    module, _ = import_example("imputation")
    x = np.random.default_rng(2).random((60, 6)).astype(np.float32)
    np.save(tmp_path / "rows.npy", x)
    observed, make_mask = [], module.make_mask

    def recorded(*args, **kwargs):
        mask = make_mask(*args, **kwargs)
        observed.append(float(mask.mean()))
        return mask

    monkeypatch.setattr(module, "make_mask", recorded)
    r = module.main(["--fast", "--data", str(tmp_path / "rows.npy"), "--out", str(tmp_path / "o")])
    assert observed[0] == 0.5 and sorted(r["errors"]) == ["random", "second-half"]
    out = capsys.readouterr().out
    assert "fill                second half   50% random" in out and "bottom" not in out
    assert (tmp_path / "o" / "imputation_second-half.png").is_file()
