"""What the tests of the examples share: where they are, the figures each writes, how to run
one in-process (``--fast``) and import it with its ``_common``."""

import importlib
import sys
from pathlib import Path

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


def import_example(name: str):
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module(name), importlib.import_module("_common")
    finally:
        sys.path.remove(str(EXAMPLES))
