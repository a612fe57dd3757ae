import pytest

from scratchvae.backend import Backend
from scratchvae.models import VAE
from scratchvae.optim import Adam


def test_one_vae_step_runs_and_changes_parameters():
    bk = Backend("numpy", "float32", seed=0)
    model = VAE(12, hidden=[8], latent=2, backend=bk)
    before = model.params.copy()
    terms, grads = model.loss_and_grads(bk.uniform((4, 12)))
    Adam(1e-2).step(model.params, grads)
    assert set(terms) == {"loss", "recon", "kl"}
    assert any(bool((before[k] != model.params[k]).any()) for k in before)


def test_the_package_lists_what_it_exports_and_imports_it_on_use():
    import scratchvae

    assert dir(scratchvae) == sorted(scratchvae.__all__)
    for name in scratchvae.__all__:
        assert getattr(scratchvae, name) is not None, name
    with pytest.raises(AttributeError, match="module 'scratchvae' has no attribute 'nope'"):
        scratchvae.nope  # noqa: B018
