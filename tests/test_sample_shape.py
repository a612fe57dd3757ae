"""`scratchvae sample` draws its images in the shape of the run's data, as `plot` does."""

import numpy as np  # numpy-boundary: writing a user data file
import pytest
from run_files import rewrite_checkpoint

from scratchvae import plots
from scratchvae.checkpoint import load_checkpoint
from scratchvae.cli import main

TINY = ["--hidden", "8", "--latent", "2", "--epochs", "1", "--no-progress", "--no-figures"]


@pytest.fixture
def shapes(monkeypatch) -> list:
    """The image shape each call of plot_samples was given."""
    seen, draw = [], plots.plot_samples

    def keep(samples, image_shape, path, *args, **kwargs):
        seen.append(image_shape)
        return draw(samples, image_shape, path, *args, **kwargs)

    monkeypatch.setattr(plots, "plot_samples", keep)
    return seen


def test_samples_of_a_run_on_images_that_are_not_square_are_drawn_in_their_shape(tmp_path, shapes):
    """A run on 10 x 20 images: `plot` drew its samples 10 x 20, `sample` as 1 x 200 strips
    (a PNG 5,584 pixels wide and 58 high for 28 x 24 images), guessing a square shape."""
    x = np.random.default_rng(0).random((60, 10, 20)).astype(np.float32)
    np.save(tmp_path / "rect.npy", x)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "rect.npy"), "--out", str(run), *TINY]) == 0
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert main(["plot", str(run)]) == 0
    assert shapes == [(10, 20), (10, 20)]
    (tmp_path / "rect.npy").unlink()  # the data gone: the shape the checkpoint recorded
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s2.png")]) == 0
    assert shapes[-1] == (10, 20) and load_checkpoint(run).image_shape == (10, 20)


def test_a_run_saved_before_the_shape_was_recorded_reads_its_data_file(tmp_path, shapes):
    x = np.random.default_rng(0).random((60, 10, 20)).astype(np.float32)
    np.save(tmp_path / "rect.npy", x)
    run = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "rect.npy"), "--out", str(run), *TINY]) == 0
    rewrite_checkpoint(run, lambda meta: meta.pop("image_shape"))  # as an older one wrote it
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert shapes == [(10, 20)]  # read from the data file
    (tmp_path / "rect.npy").unlink()  # and that gone too: the square guess (none: strips)
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s2.png")]) == 0
    assert shapes[-1] is None


def test_samples_of_the_digits_are_8_by_8(tmp_path, shapes):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY]) == 0
    assert main(["sample", str(run), "--n", "4", "--out", str(tmp_path / "s.png")]) == 0
    assert shapes == [(8, 8)]
