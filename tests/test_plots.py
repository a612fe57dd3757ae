"""Every plot writes a PNG; the standard set picks the figures that fit the model."""

from __future__ import annotations

import errno

import numpy as np  # numpy-boundary: building test inputs
import pytest
from matplotlib.figure import Figure

from scratchvae import curves, figure_parts, plots
from scratchvae.atomic import temp_files
from scratchvae.autoencoders import DenoisingAE
from scratchvae.backend import Backend
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.data.labels import FASHION_MNIST_CLASSES, class_names
from scratchvae.models import VAE
from scratchvae.plots import (
    FIGURE_SUFFIXES,
    INPUT_NOTES,
    _pca2,
    as_trained,
    figure_path,
    plot_curves,
    plot_denoising,
    plot_features,
    plot_imputation,
    plot_interpolation,
    plot_latent,
    plot_manifold,
    plot_reconstructions,
    plot_samples,
    save_standard_figures,
)

PNG = b"\x89PNG\r\n\x1a\n"
SHAPE = (8, 8)


def _is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 200


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits", "test")
    return dataset_from_array(d.x[:40], d.y[:40], "digits-40")


@pytest.fixture(scope="module")
def vae2():
    return VAE(64, hidden=[16], latent=2, backend=Backend(seed=0))


HISTORY = [
    {"epoch": e, "train_loss": 40 - e, "train_recon": 38 - e, "train_kl": 2.0, "val_loss": 41 - e}
    for e in (1, 2, 3)
]


def test_each_plot_writes_a_png(tmp_path, digits, vae2):
    x = digits.get_batch(slice(0, 6))
    noisy = np.clip(x + 0.3, 0, 1)
    mask = (np.arange(64) < 32).astype(np.float32)[None, :].repeat(6, axis=0)
    paths = [
        plot_reconstructions(x, vae2.reconstruct(x), SHAPE, tmp_path / "r.png"),
        plot_samples(vae2.sample(9), SHAPE, tmp_path / "s.png"),
        plot_manifold(vae2, SHAPE, tmp_path / "m.png", n=5),
        plot_latent(vae2, digits.get_batch(slice(None)), digits.y, tmp_path / "l.png"),
        plot_latent(vae2, x, None, tmp_path / "l2.png"),
        plot_curves(HISTORY, tmp_path / "c.png"),
        plot_interpolation(vae2, x[0], x[1], SHAPE, tmp_path / "i.png", steps=5),
        plot_denoising(noisy, x, x, SHAPE, tmp_path / "d.png"),
        plot_imputation(x * mask, x, x, SHAPE, tmp_path / "p.png", mask=mask),
        plot_samples(vae2.sample(3), None, tmp_path / "strip.png"),  # not images: strips
        plot_features(np.zeros((4, 64)), SHAPE, tmp_path / "f.png"),  # all-zero weights
        plot_features(np.ones((3, 10)), None, tmp_path / "f2.png"),
    ]
    for path in paths:
        assert _is_png(path), path


def test_manifold_needs_two_latent_dimensions(tmp_path):
    model = VAE(64, hidden=[8], latent=3, backend=Backend(seed=0))
    with pytest.raises(ValueError, match="2-D latent"):
        plot_manifold(model, SHAPE, tmp_path / "m.png")


def test_curves_need_a_history(tmp_path):
    with pytest.raises(ValueError, match="no training history"):
        plot_curves([], tmp_path / "c.png")
    # a library save may record epochs only: matplotlib's "Number of columns must be a
    # positive integer, not 0" was the message, and `plot` drew nothing else
    with pytest.raises(ValueError, match="holds no loss terms"):
        plot_curves([{"epoch": 1, "step": 3}], tmp_path / "c.png")


def test_a_run_whose_history_holds_no_terms_gets_its_other_figures(tmp_path):
    from scratchvae.checkpoint import save_checkpoint
    from scratchvae.cli import main
    from scratchvae.optim import Adam

    model = VAE(64, hidden=[8], latent=2, backend=Backend(seed=0))
    run = tmp_path / "run"
    run.mkdir()
    history = [{"epoch": 1, "step": 3}]
    save_checkpoint(run / "checkpoint.npz", model, Adam(1e-3), epoch=1, step=3, history=history)
    assert main(["plot", str(run), "--data", "digits"]) == 0
    assert (run / "samples.png").exists() and not (run / "curves.png").exists()


def test_pca_projects_on_the_directions_of_largest_variance():
    rng = np.random.default_rng(0)
    codes = rng.normal(size=(500, 5)) * np.array([0.1, 5.0, 0.1, 2.0, 0.1])
    points, axis = _pca2(codes)
    assert axis == "PC" and points.shape == (500, 2)
    assert np.var(points[:, 0]) == pytest.approx(np.var(codes[:, 1]), rel=0.05)
    assert np.var(points[:, 1]) == pytest.approx(np.var(codes[:, 3]), rel=0.05)


def test_standard_figures_fit_the_model(tmp_path, digits, vae2):
    names = {p.name for p in save_standard_figures(vae2, digits, HISTORY, tmp_path / "v")}
    assert names == {
        "curves.png",
        "recon.png",
        "samples.png",
        "latent.png",
        "interp.png",
        "manifold.png",
    }
    dae = DenoisingAE(64, hidden=[16], latent=4, backend=Backend(seed=0))
    paths = save_standard_figures(dae, digits, None, tmp_path / "d")
    names = {p.name for p in paths}
    assert "denoise.png" in names and "manifold.png" not in names and "curves.png" not in names
    assert all(_is_png(p) for p in paths)


@pytest.fixture
def figures(monkeypatch) -> list:
    """The matplotlib figures the plots draw (each saved as usual)."""
    drawn, save = [], plots._save

    def keep(fig, path):
        drawn.append(fig)
        return save(fig, path)

    for module in (plots, figure_parts, curves):  # the figures of all save through _save
        monkeypatch.setattr(module, "_save", keep)
    return drawn


def test_ten_labels_get_a_legend_not_a_colour_bar(tmp_path, digits, vae2, figures):
    plot_latent(vae2, digits.get_batch(slice(None)), digits.y, tmp_path / "l.png")
    (fig,) = figures
    assert len(fig.axes) == 1  # no colour-bar axes
    legend = fig.axes[0].get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [str(c) for c in np.unique(digits.y)]
    many = np.arange(len(digits.y)) % 30  # thirty labels: a colour bar
    plot_latent(vae2, digits.get_batch(slice(None)), many, tmp_path / "l2.png")
    assert len(figures[1].axes) == 2 and figures[1].axes[0].get_legend() is None


def test_a_one_dimensional_code_and_float_labels(tmp_path, digits, figures):
    """latent 1: the codes on a line (y = 0); labels 3.0 shown as '3', 2.5 as it is."""
    vae1 = VAE(64, hidden=[8], latent=1, backend=Backend(seed=0))
    x = digits.get_batch(slice(0, 6))
    plot_latent(vae1, x, np.array([3.0, 3.0, 2.5, 1.0, 1.0, 2.5]), tmp_path / "l.png")
    (fig,) = figures
    ax = fig.axes[0]
    offsets = ax.collections[0].get_offsets()
    np.testing.assert_array_equal(np.asarray(offsets)[:, 1], 0.0)
    np.testing.assert_allclose(np.asarray(offsets)[:, 0], np.ravel(vae1.encode(x)[0]), rtol=1e-6)
    # no z2 axis (it said "z2", with ticks at +-0.04, for a dimension the code has not)
    assert (ax.get_xlabel(), ax.get_ylabel(), list(ax.get_yticks())) == ("z1", "", [])
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["1", "2.5", "3"]


def _legend(fig) -> tuple[str, list[str]]:
    legend = fig.axes[0].get_legend()
    return legend.get_title().get_text(), [t.get_text() for t in legend.get_texts()]


def test_fashion_mnist_classes_are_named_in_the_latent_legend(tmp_path, digits, vae2, figures):
    """Fashion-MNIST's latent figure said 0..9; it names the classes, MNIST's keeps its digits
    (the standard set of ``scratchvae train`` / ``scratchvae plot`` as well as plot_latent)."""
    x = digits.get_batch(slice(None))
    plot_latent(vae2, x, digits.y, tmp_path / "l.png", FASHION_MNIST_CLASSES)
    title, texts = _legend(figures[-1])
    assert title == "class" and texts == [FASHION_MNIST_CLASSES[c] for c in np.unique(digits.y)]
    assert "Ankle boot" in texts and "T-shirt/top" in texts
    for name, expected in (("fashion-mnist", list(FASHION_MNIST_CLASSES)), ("mnist", None)):
        data = dataset_from_array(digits.x, digits.y, name)
        figures.clear()
        save_standard_figures(vae2, data, None, tmp_path / name)
        (latent,) = [f for f in figures if f.axes[0].get_legend() is not None]
        title, texts = _legend(latent)
        assert texts == (expected or [str(c) for c in range(10)])
        assert title == ("class" if expected else "label")
    assert class_names("fashion-mnist") == FASHION_MNIST_CLASSES and class_names("mnist") is None


def test_features_get_a_colour_scale(tmp_path, figures):
    weights = np.random.default_rng(0).normal(size=(9, 64)) * np.arange(1, 10)[:, None]
    plot_features(weights, SHAPE, tmp_path / "f.png", "decoder weights")
    (fig,) = figures
    image, bar = fig.axes
    assert bar.get_ylabel() == "weight / the unit's largest |weight|"
    assert image.images[0].get_clim() == (-1, 1)
    assert "largest |weight| per unit" in image.get_title()


def _white_rows(path) -> float:
    """The fraction of the PNG's pixel rows that are blank (white)."""
    rgb = plots.plt.imread(path)[..., :3]  # (rows, columns, RGB) in [0, 1]
    return float((rgb > 0.95).all(axis=(1, 2)).mean())


def test_interpolation_and_reconstructions_are_not_mostly_whitespace(tmp_path, digits, vae2):
    x = digits.get_batch(slice(0, 10))
    interp = plot_interpolation(vae2, x[0], x[1], SHAPE, tmp_path / "i.png")
    recon = plot_reconstructions(x, vae2.reconstruct(x), SHAPE, tmp_path / "r.png")
    assert _white_rows(interp) < 0.35 and _white_rows(recon) < 0.35  # were 0.45 and 0.44


def _png_size(path) -> tuple[int, int]:
    """(width, height) from the PNG's header."""
    head = path.read_bytes()[:24]
    return int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")


def _disk_full(self, fname, **kwargs):
    """Figure.savefig on a full disk: part of the file written, then ENOSPC."""
    fname.write(PNG + b"half a figure")
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_save_keeps_the_old_figure_and_leaves_no_file(tmp_path, vae2, monkeypatch):
    # was: savefig wrote in place, so a full disk left a truncated PNG over a good one
    good = plot_samples(vae2.sample(4), SHAPE, tmp_path / "s.png")
    before = good.read_bytes()
    monkeypatch.setattr(Figure, "savefig", _disk_full)
    with pytest.raises(OSError, match="No space left"):
        plot_samples(vae2.sample(4), SHAPE, good)
    with pytest.raises(OSError, match="No space left"):
        plot_samples(vae2.sample(4), SHAPE, tmp_path / "new.png")
    assert good.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.png"]  # no temp, no empty file
    assert temp_files(good) == [] and plots.plt.get_fignums() == []  # the figures closed


def test_the_path_returned_is_the_file_written(tmp_path, vae2):
    # was: 'x' returned while matplotlib wrote x.png; '.txt' failed inside matplotlib
    assert plot_samples(vae2.sample(4), SHAPE, tmp_path / "x") == tmp_path / "x.png"
    assert _is_png(tmp_path / "x.png") and not (tmp_path / "x").exists()
    pdf = plot_samples(vae2.sample(4), SHAPE, tmp_path / "x.PDF")
    assert pdf.read_bytes()[:5] == b"%PDF-"
    with pytest.raises(ValueError, match=r"\.txt is not one of \.png, \.pdf"):
        plot_samples(vae2.sample(4), SHAPE, tmp_path / "x.txt")
    assert figure_path("a/b.svg").name == "b.svg" and set(FIGURE_SUFFIXES) >= {".png", ".pdf"}


def test_long_rows_wrap_into_blocks_of_inputs_above_reconstructions(tmp_path, digits):
    # was: 297 pairs in one row 17836 pixels wide
    x = np.repeat(digits.get_batch(slice(0, 40)), 8, axis=0)[:297]
    path = plot_reconstructions(x, x, SHAPE, tmp_path / "r.png")
    width, height = _png_size(path)
    assert width < 2000 and height < 2000 and height > width / 2
    panels = figure_parts._wrapped([("input", x), ("recon", x)], SHAPE)
    labels = [label for label, _ in panels]
    assert labels[:4] == ["input\n1-25", "recon\n1-25", "input\n26-50", "recon\n26-50"]
    assert labels[-1] == "recon\n276-297" and len({m.shape for _, m in panels}) == 1
    assert [label for label, _ in figure_parts._wrapped([("input", x[:20])], SHAPE)] == ["input"]


def test_a_large_sample_grid_keeps_a_pixel_per_pixel(tmp_path):
    big = plot_samples(np.zeros((900, 784)), (28, 28), tmp_path / "b.png")  # 30 x 30 images
    assert _png_size(big)[0] >= 30 * 29  # was 485 wide: each image 16 pixels for 28
    small = plot_samples(np.zeros((64, 784)), (28, 28), tmp_path / "s.png")
    assert _png_size(small)[0] < 600  # the usual 6 inches


def test_a_save_removes_what_a_killed_save_left_and_keeps_a_live_one(tmp_path):
    """A figure's temporary file from a save killed mid-way (kill -9) is removed by the next
    save of that figure once nothing has written it for STALE_FIGURE seconds."""
    import os

    from scratchvae.figure_parts import STALE_FIGURE

    dead, live = tmp_path / ".samples.png.dead.tmp", tmp_path / ".samples.png.live.tmp"
    for tmp, age in ((dead, STALE_FIGURE + 60), (live, 5)):
        tmp.write_bytes(b"half a png")
        os.utime(tmp, (tmp.stat().st_atime - age, tmp.stat().st_mtime - age))
    plot_samples(np.random.default_rng(0).random((4, 64)), (8, 8), tmp_path / "samples.png")
    assert not dead.exists() and live.exists() and (tmp_path / "samples.png").stat().st_size


def test_a_run_of_one_epoch_draws_its_point_on_the_curves(tmp_path, figures):
    """A line through one point draws nothing: the curves of a 1-epoch run were empty axes."""
    plot_curves(HISTORY[:1], tmp_path / "c1.png")
    plot_curves([{**HISTORY[0], "epoch": e} for e in range(1, 101)], tmp_path / "c100.png")
    one, many = figures
    for ax in one.axes:
        assert ax.lines and all(line.get_marker() == "o" for line in ax.lines)
        lo, hi = ax.get_xlim()
        assert [t for t in ax.get_xticks() if lo <= t <= hi] == [1]  # not 0.96 ... 1.04
    assert all(line.get_marker() in (None, "None", "") for line in many.axes[0].lines)
    assert all(float(t).is_integer() for t in many.axes[0].get_xticks())


def test_the_latent_plot_says_means_for_a_vae_and_codes_for_an_ae(tmp_path, digits, figures):
    from scratchvae.models import AE

    x = digits.get_batch(slice(None))
    plot_latent(VAE(64, hidden=[8], latent=2, backend=Backend(seed=0)), x, None, tmp_path / "v")
    plot_latent(AE(64, hidden=[8], latent=2, backend=Backend(seed=0)), x, None, tmp_path / "a")
    assert [f.axes[0].get_title() for f in figures] == ["encoder means", "encoder codes"]


def test_denoising_and_imputation_figures_take_a_title_and_a_dae_names_its_noise(
    tmp_path, digits, figures
):
    x = digits.get_batch(slice(0, 4))
    plot_denoising(x, x, x, SHAPE, tmp_path / "d.png", title="30% zeroed")
    plot_imputation(x, x, x, SHAPE, tmp_path / "p.png", title="bottom half missing")
    dae = DenoisingAE(64, hidden=[8], latent=2, noise="mask", noise_level=0.3, backend=Backend())
    save_standard_figures(dae, digits, HISTORY, tmp_path / "dae")
    titles = [f._suptitle.get_text() for f in figures if f._suptitle is not None]
    assert titles[:2] == ["30% zeroed", "bottom half missing"]
    assert "denoising: mask noise 0.3" in titles


def _shown(fig, row: int = 0) -> np.ndarray:
    """The pixel values of one mosaic row of a rows figure (an input row, say)."""
    return np.asarray(fig.axes[row].images[0].get_array())


@pytest.mark.parametrize("mode", ["threshold", "dynamic"])
def test_a_binarized_run_is_shown_the_binarized_input(tmp_path, digits, mode, figures):
    """A run trained on binarized digits was drawn (and encoded) from the grey levels: its
    inputs are now binarized as in training, and the titles say so."""
    dae = DenoisingAE(64, hidden=[8], latent=2, noise="mask", noise_level=0.3, backend=Backend())
    save_standard_figures(dae, digits, None, tmp_path / mode, binarize=mode)
    recon, interp, denoise = (f for f in figures if f._suptitle is not None)
    note = INPUT_NOTES[mode]
    assert recon._suptitle.get_text() == f"input / reconstruction; input {note}"
    assert interp._suptitle.get_text().endswith(f"the two inputs, {note})")
    assert denoise._suptitle.get_text().endswith(f"on the input {note}")
    for fig, row in ((recon, 0), (denoise, 2)):  # the input, the clean row
        assert set(np.unique(_shown(fig, row))) == {0.0, 1.0}  # gaps 0, pixels 0 or 1
    x = digits.get_batch(slice(None))
    expected = as_trained(x, mode, Backend())
    assert set(np.unique(np.asarray(expected))) == {0.0, 1.0}
    if mode == "threshold":
        np.testing.assert_array_equal(expected, x > 0.5)
    figures.clear()
    save_standard_figures(dae, digits, None, tmp_path / "grey")  # binarize "none": grey levels
    recon = next(f for f in figures if f._suptitle is not None)
    assert recon._suptitle.get_text() == "input / reconstruction"
    assert len(np.unique(_shown(recon))) > 2


def test_train_reconstruct_and_plot_show_a_binarized_run_its_binarized_input(tmp_path, figures):
    """`scratchvae train`, `reconstruct` and `plot` follow the run's recorded binarization."""
    from scratchvae.cli import main

    run = tmp_path / "run"
    tiny = ["--epochs", "1", "--hidden", "8", "--latent", "2", "--no-progress"]
    assert main(["train", "--out", str(run), *tiny, "--binarize", "threshold"]) == 0
    assert main(["reconstruct", str(run), "--out", str(tmp_path / "r.png")]) == 0
    assert main(["plot", str(run)]) == 0
    recons = [
        f for f in figures if f._suptitle is not None and "reconstruction" in f._suptitle.get_text()
    ]
    assert len(recons) == 3
    for fig in recons:
        assert fig._suptitle.get_text().endswith("binarized at 0.5, as in training")
        assert set(np.unique(_shown(fig))) == {0.0, 1.0}


def test_the_manifold_says_what_its_axes_are_and_samples_what_they_show(tmp_path, vae2, figures):
    """The manifold was a bare grid (which way is z1, over what range?); the samples' title
    said "samples from the prior" of decoded means, not draws of x."""
    plot_manifold(vae2, SHAPE, tmp_path / "m.png", n=5)
    plot_samples(vae2.sample(4), SHAPE, tmp_path / "s.png")
    manifold, samples = (fig.axes[0] for fig in figures)
    assert manifold.get_xlabel().startswith("z1 from -1.28 (left) to 1.28")
    assert manifold.get_ylabel() == "z2 from -1.28 (bottom) to 1.28"
    assert "mean" in samples.get_title() and "N(0, I)" in samples.get_title()


def test_the_curves_mark_the_kl_warm_up(tmp_path, figures):
    """During the warm-up the training loss is recon + w KL with w < 1, the validation loss
    recon + KL: the training loss fell below the validation loss and rose again when w
    reached 1, with nothing on the figure to say why."""
    weights = [0.25, 0.75, 1.0, 1.0]
    history = [{**HISTORY[0], "epoch": e, "kl_weight": w} for e, w in enumerate(weights, 1)]
    plot_curves(history, tmp_path / "c.png")
    plot_curves([{**r, "kl_weight": 1.0} for r in history], tmp_path / "c2.png")
    warm, plain = figures
    # was "loss (train: recon + w KL, w 0.25 -> 1)": w is the code's name, not the reader's
    assert warm.axes[0].get_title() == "loss (training: recon + KL weight x KL)"
    for ax in warm.axes:
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
        # from 0, where the run's first step starts (not 0.25, epoch 1's last step's weight)
        assert "KL warm-up: KL weight from 0 to 1" in labels
    assert plain.axes[0].get_title() == "loss"
    assert "KL warm-up" not in [t.get_text() for t in plain.axes[0].get_legend().get_texts()]


def test_decoded_prior_draws_of_an_ae_are_not_called_its_samples(
    tmp_path, digits, vae2, monkeypatch
):
    """A denoising AE's samples.png said "decoded z ~ N(0, I)" as a VAE's does: an AE has no
    prior, and its codes need not look like N(0, I)."""
    titles = []
    real = plots.plot_samples

    def recorded(samples, shape, path, title=plots.SAMPLES_TITLE):
        titles.append(title)
        return real(samples, shape, path, title)

    monkeypatch.setattr(plots, "plot_samples", recorded)
    dae = DenoisingAE(64, hidden=[16], latent=4, backend=Backend(seed=0))
    save_standard_figures(vae2, digits, None, tmp_path / "v")
    save_standard_figures(dae, digits, None, tmp_path / "d")
    assert titles == [plots.SAMPLES_TITLE, plots.NO_PRIOR_TITLE]
    assert "no prior" in plots.NO_PRIOR_TITLE


def test_a_denoising_aes_curves_say_which_inputs_each_loss_is_from(tmp_path, digits, figures):
    """A DAE's training loss is from corrupted inputs, its validation loss from clean ones: on
    Fashion-MNIST with mask noise 0.3, val 259.7 above train 231.7 looked like overfitting."""
    dae = DenoisingAE(64, hidden=[16], latent=4, backend=Backend(seed=0))
    save_standard_figures(dae, digits, HISTORY, tmp_path / "d")
    save_standard_figures(VAE(64, hidden=[16], latent=2), digits, HISTORY, tmp_path / "v")
    curves_of = [f for f in figures if f.axes[0].get_title().startswith("loss")]
    dae_curves, vae_curves = curves_of
    labels = [t.get_text() for t in dae_curves.axes[0].get_legend().get_texts()]
    assert labels == ["train (corrupted inputs)", "val (clean inputs)"]
    assert [t.get_text() for t in vae_curves.axes[0].get_legend().get_texts()] == ["train", "val"]


def test_an_iwae_runs_curves_say_what_its_training_loss_is_and_keep_the_val_kl(
    tmp_path, digits, figures
):
    """An IWAE run's training loss is -L_k (no recon + KL, no train_kl), its validation loss a
    one-draw -ELBO: the panel said nothing (or, with a warm-up, "training: recon + KL weight x
    KL"), and the KL panel was left out although the validation KL was recorded."""
    iwae = VAE(64, hidden=[16], latent=2, objective="iwae", k=5, backend=Backend(seed=0))
    history = [
        {
            "epoch": e,
            "train_loss": 30.0 - e,
            "train_recon": 31.0 - e,
            "val_loss": 32.0 - e,
            "val_recon": 30.0 - e,
            "val_kl": 2.0,
            "kl_weight": min(1.0, e / 2),
        }
        for e in (1, 2, 3)
    ]
    save_standard_figures(iwae, digits, history, tmp_path / "i")
    (fig,) = [f for f in figures if f.axes[0].get_title().startswith("loss")]
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0] == (  # a warm-up: the weight is on the log-ratio and the val KL
        "loss (training: -L_5, log p(z)/q weighted by the KL weight;\n"
        "validation: one-draw recon + KL weight x KL)"
    )
    for r in history:  # without one (and beta 1): the bound and the -ELBO
        r["kl_weight"] = 1.0
    figures.clear()
    save_standard_figures(iwae, digits, history, tmp_path / "j")
    (fig,) = [f for f in figures if f.axes[0].get_title().startswith("loss")]
    assert fig.axes[0].get_title() == (
        "loss (training: -L_5, the IWAE bound;\nvalidation: one-draw -ELBO)"
    )
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1:] == ["recon", "kl"]
    kl_lines = [(line.get_label(), line.get_color()) for line in fig.axes[2].get_lines()]
    assert kl_lines == [("val", "C1")]  # the colour of val in the other panels


def test_rows_of_one_pixel_high_images_get_a_readable_height(tmp_path, figures):
    """1 x 60 strips given as images (the imputation example's rows): each mosaic row was
    width / 60 high (0.1 in), and its label overlapped the next row's. Stretched now, as rows
    without an image shape are; 8 x 8 images keep their own aspect."""
    rows = [(name, np.random.default_rng(0).random((4, 60))) for name in ("a", "b", "c")]
    figure_parts._rows_figure(rows, (1, 60), "strips", tmp_path / "s.png")
    figure_parts._rows_figure([("a", np.zeros((4, 64)))], (8, 8), "images", tmp_path / "i.png")
    strips, images = figures
    assert strips.get_size_inches()[1] >= 3 * 0.5
    assert strips.axes[0].get_aspect() == "auto" and images.axes[0].get_aspect() == 1.0


def test_the_loss_panel_says_how_the_loss_weighs_its_terms(tmp_path, digits, figures):
    """The start line says `loss = recon + 2 kl` (a VAE's beta 2) or `recon + 3 sparsity`;
    the curves' loss panel said "loss" over curves its other panels did not add up to."""
    from scratchvae.autoencoders import SparseAE

    history = [{"epoch": e, "train_loss": 30.0 - e, "train_recon": 28.0 - e, "train_kl": 1.0,
                "val_loss": 31.0 - e, "val_recon": 29.0 - e, "val_kl": 1.0, "kl_weight": 2.0}
               for e in (1, 2)]  # fmt: skip
    bk = Backend(seed=0)
    save_standard_figures(VAE(64, hidden=[8], latent=2, beta=2, backend=bk), digits, history,
                          tmp_path / "v")  # fmt: skip
    sae = SparseAE(64, hidden=[], latent=6, beta=3, backend=bk)
    sparse = [{k.replace("kl", "sparsity"): v for k, v in r.items() if k != "kl_weight"}
              for r in history]  # fmt: skip
    save_standard_figures(sae, digits, sparse, tmp_path / "s")
    plain = [{**r, "kl_weight": 1.0} for r in history]
    save_standard_figures(VAE(64, hidden=[8], latent=2, backend=bk), digits, plain, tmp_path / "p")
    titles = [f.axes[0].get_title() for f in figures if f.axes[0].get_title().startswith("loss")]
    assert titles == ["loss = recon + 2 kl", "loss = recon + 3 sparsity", "loss"]
