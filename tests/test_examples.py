"""Smoke tests: every example runs in-process with --fast and writes its figures."""

import importlib
import math
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

FIGURES = {
    "vae_digits": [
        "curves.png",
        "recon.png",
        "samples.png",
        "latent.png",
        "manifold_2d.png",
        "latent_2d.png",
    ],
    "ae_vs_vae": ["ae_vs_vae_samples.png"],
    "denoising_ae": ["denoise_gaussian.png", "denoise_mask.png"],
    "sparse_ae": ["decoder_features.png", "encoder_features.png"],
    "linear_ae_pca": ["pca_vs_linear_ae.png"],
    "imputation": ["imputation_bottom-half.png", "imputation_random.png"],
    "iwae_snr": ["iwae_snr.png"],
}


def run_example(name: str, out: Path, *extra: str) -> dict:
    sys.path.insert(0, str(EXAMPLES))
    try:
        module = importlib.import_module(name)
        return module.main(["--fast", "--out", str(out), *extra])
    finally:
        sys.path.remove(str(EXAMPLES))


def check_vae_digits(r):
    for key in ("latent", "latent2"):  # the IWAE bound is at least the ELBO (up to noise)
        assert math.isfinite(r[key]["iw_nll"]) and r[key]["iw_nll"] <= r[key]["neg_elbo"] + 0.5


def check_linear_ae_pca(r):
    assert r["max_angle_deg"] < 1.0  # a linear AE finds the principal subspace


def check_imputation(r):
    for errs in r["errors"].values():
        assert 0 < errs["VAE z = mu"] < 1 and 0 < errs["mean image"] < 1


CHECKS = {
    "vae_digits": check_vae_digits,
    "linear_ae_pca": check_linear_ae_pca,
    "imputation": check_imputation,
    "denoising_ae": lambda r: r["errors"]["gaussian"]["input"] > 0,
    "sparse_ae": lambda r: 0 < r["mean_activation"] < 1,
    "ae_vs_vae": lambda r: r["AE"]["nn"] > 0 and r["VAE"]["nn"] > 0,
    "iwae_snr": lambda r: len(r["rows"]) == 9,
}
EXTRA = {"linear_ae_pca": ["--steps", "1500"]}


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_example_writes_its_figures(name, tmp_path, capsys):
    result = run_example(name, tmp_path, *EXTRA.get(name, []))
    for fig in FIGURES[name]:
        path = tmp_path / fig
        assert path.is_file() and path.stat().st_size > 1000, fig
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "done in" in printed and "nan" not in printed.lower()
    assert CHECKS[name](result) is not False
