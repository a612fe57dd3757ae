"""Checkpoints: round trip, atomic writes, clear errors for damaged or foreign files."""

from __future__ import annotations

import dataclasses
import json

import numpy as np  # numpy-boundary: writing foreign files, comparing host arrays
import pytest

from scratchvae.autoencoders import DenoisingAE
from scratchvae.backend import Backend
from scratchvae.checkpoint import (
    FORMAT,
    CheckpointError,
    copy_params,
    load_checkpoint,
    load_model,
    restore_optimizer,
    restore_training,
    save_checkpoint,
)
from scratchvae.checkpoint_checks import check_model_config, model_settings, param_shapes
from scratchvae.data import DataError, check_n_features, load_dataset
from scratchvae.models import VAE, model_classes
from scratchvae.optim import SGD, Adam


def _trained(seed=0):
    bk = Backend("numpy", "float32", seed=seed)
    model = VAE(12, hidden=[8], latent=3, beta=0.5, backend=bk)
    opt = Adam(1e-2)
    for _ in range(3):
        _, grads = model.loss_and_grads(bk.uniform((5, 12)))
        opt.step(model.params, grads)
    return model, opt


def _save(path, model, opt, **kw):
    args = {**dict(epoch=2, step=6, train_config={"epochs": 5}), **kw}
    args.setdefault("history", [{"epoch": e + 1} for e in range(args["epoch"])])  # one an epoch
    return save_checkpoint(path, model, opt, **args)


def test_round_trip_restores_model_optimizer_generator_and_progress(tmp_path):
    model, opt = _trained()
    state = model.backend.rng_state()
    path = _save(tmp_path / "checkpoint.npz", model, opt)
    expected_draw = model.backend.normal((4,))

    loaded, ckpt = load_model(tmp_path)  # a run folder means its checkpoint.npz
    assert isinstance(loaded, VAE) and loaded.config == model.config
    for name in model.params:
        assert np.array_equal(loaded.params[name], model.params[name]), name
    assert (ckpt.epoch, ckpt.step, ckpt.train_config, ckpt.history) == (
        2,
        6,
        {"epochs": 5},
        [{"epoch": 1}, {"epoch": 2}],
    )
    assert ckpt.backend == {"name": "numpy", "dtype": "float32", "seed": 0}
    opt2 = Adam(1e-2)
    restore_optimizer(ckpt, opt2, loaded)
    assert opt2.t == 3 and set(opt2.state) == set(opt.state)
    for key in opt.state:
        assert np.array_equal(opt2.state[key], opt.state[key])
        assert opt2.state[key].dtype == np.float32
    loaded.backend.set_rng_state(ckpt.rng_state)
    assert ckpt.rng_state == state
    assert np.array_equal(loaded.backend.normal((4,)), expected_draw)
    with np.load(path, allow_pickle=False) as z:  # loads without pickle
        assert str(z["__format__"]) == FORMAT


def test_other_model_kinds_round_trip(tmp_path):
    model = DenoisingAE(12, hidden=[8], latent=3, noise="mask", noise_level=0.2)
    save_checkpoint(tmp_path / "c.npz", model)
    loaded, ckpt = load_model(tmp_path / "c.npz")
    assert isinstance(loaded, DenoisingAE) and loaded.noise == "mask"
    assert np.array_equal(loaded.params.flat, model.params.flat)
    with pytest.raises(CheckpointError, match="no optimizer state"):
        restore_optimizer(ckpt, Adam(1e-3), loaded)


@pytest.mark.parametrize(
    "key, value, needle",
    [
        ("m.flat", np.zeros(5, np.float32), r"m.flat is float32\[5\]"),
        ("v.flat", None, "missing"),
        ("t", np.array(-1), "step count"),
    ],
)
def test_restore_optimizer_checks_the_state_against_the_model(tmp_path, key, value, needle):
    """A state that does not fit the model's parameters is refused before anything is
    loaded: one line naming the entry, the optimizer untouched."""
    model, opt = _trained()
    _save(tmp_path / "checkpoint.npz", model, opt)
    _, ckpt = load_model(tmp_path)
    if value is None:
        del ckpt.optim_state[key]
    else:
        ckpt.optim_state[key] = value
    fresh = Adam(1e-2)
    with pytest.raises(CheckpointError, match=needle) as info:
        restore_optimizer(ckpt, fresh, model)
    assert "\n" not in str(info.value) and "train again without --resume" in str(info.value)
    assert fresh.t == 0 and fresh.state == {}


def test_crash_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt, epoch=1)
    before = path.read_bytes()

    def savez_that_dies(file, **arrays):
        file.write(b"PK\x03\x04 half a zip file")  # part of the file is written, then ...
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", savez_that_dies)
    model.params.flat[...] += 1.0
    with pytest.raises(OSError, match="disk full"):
        _save(path, model, opt, epoch=2)
    assert path.read_bytes() == before
    assert load_checkpoint(path).epoch == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.npz"]  # no temp file left


def test_interrupt_while_writing_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt, epoch=1)
    before = path.read_bytes()
    real_savez = np.savez

    def savez_then_ctrl_c(file, **arrays):
        real_savez(file, **arrays)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", savez_then_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        _save(path, model, opt, epoch=2)
    assert path.read_bytes() == before


def test_refuses_to_save_non_finite_parameters(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt)
    before = path.read_bytes()
    model.params["encoder.0.W"][0, 0] = np.nan
    with pytest.raises(CheckpointError, match="non-finite"):
        _save(path, model, opt)
    assert path.read_bytes() == before


def test_a_file_that_is_no_checkpoint_never_suggests_allow_pickle(tmp_path):
    # was: NumPy's "If you trust the file you can load it unsafely using allow_pickle="
    (tmp_path / "metrics.jsonl").write_text('{"epoch": 1}\n')
    (tmp_path / "empty.npz").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", x=np.array([{}, None], dtype=object))
    for name, what in (
        ("metrics.jsonl", "is not a scratchvae checkpoint (not an .npz archive); pass the run"),
        ("empty.npz", "is not a scratchvae checkpoint (an empty file)"),
        ("array.npy", "is not a scratchvae checkpoint (a .npy array, not an .npz archive)"),
        ("objects.npz", "(truncated or not an .npz: it holds pickled Python objects, which"),
    ):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(tmp_path / name)
        message = str(info.value)
        assert message.startswith(f"{tmp_path / name} ") and what in message
        assert "allow_pickle" not in message and "\n" not in message


def test_truncated_file_gives_a_one_line_error(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt)
    data = path.read_bytes()
    for cut in (10, len(data) // 2, len(data) - 30):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert "not a readable scratchvae checkpoint" in str(info.value)
        assert "\n" not in str(info.value)


def test_foreign_files_give_clear_errors(tmp_path):
    random_bytes = tmp_path / "random.npz"
    random_bytes.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(CheckpointError, match=r"not a scratchvae checkpoint \(not an .npz"):
        load_checkpoint(random_bytes)

    other_npz = tmp_path / "other.npz"
    np.savez(other_npz, x=np.zeros(3))
    with pytest.raises(CheckpointError, match="no format marker"):
        load_checkpoint(other_npz)

    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.npz")


def test_missing_entries_and_wrong_versions_are_reported(tmp_path):
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}

    def rewrite(name, **changes):
        new = {**arrays, **changes}
        new = {k: v for k, v in new.items() if v is not None}
        np.savez(tmp_path / name, **new)
        return tmp_path / name

    with pytest.raises(CheckpointError, match="'meta' is missing"):
        load_checkpoint(rewrite("a.npz", meta=None))
    with pytest.raises(CheckpointError, match="'rng_state' is missing"):
        load_checkpoint(rewrite("b.npz", rng_state=None))
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(rewrite("c.npz", __version__=np.array(99)))
    with pytest.raises(CheckpointError, match="entry .meta. is not valid JSON"):
        load_checkpoint(rewrite("d.npz", meta=np.array("{not json")))
    with pytest.raises(CheckpointError, match="does not match"):
        load_model(rewrite("e.npz", **{"param/decoder.1.b": None}))
    meta = json.loads(str(arrays["meta"]))
    meta["model_config"]["hidden"] = [9]
    with pytest.raises(CheckpointError, match=r"param/decoder.0.W is \(3, 8\), the config gives"):
        load_model(rewrite("f.npz", meta=np.array(json.dumps(meta))))


def test_feature_count_mismatch_between_data_and_checkpoint(tmp_path):
    model, opt = _trained()  # 12 features
    _save(tmp_path / "checkpoint.npz", model, opt)
    loaded, _ = load_model(tmp_path)
    digits = load_dataset("digits", "test")  # 64 features
    with pytest.raises(DataError, match="64 features but the checkpoint's model expects 12"):
        check_n_features(digits, loaded.n_features)


@pytest.mark.parametrize("kind", ["vae", "ae", "dae", "sae"])
@pytest.mark.parametrize("hidden, likelihood", [([], "bernoulli"), ([5, 3], "gaussian-learned")])
def test_param_shapes_are_the_shapes_every_model_kind_allocates(kind, hidden, likelihood):
    """The shapes a config is checked against (before anything is allocated) are exactly the
    ones the model then allocates; the settings are exactly what its config holds (a VAE's
    objective, k and estimator only when they are not the defaults)."""
    model = model_classes()[kind](7, hidden=hidden, latent=2, likelihood=likelihood)
    assert param_shapes(model.config) == model.params.shapes
    optional = {"objective", "k", "estimator"} if kind == "vae" else set()
    assert set(model_settings(kind)) - optional == set(model.config) - {"model"}
    check_model_config(model.config, model.params.shapes)  # no error
    if kind == "vae":
        iwae = VAE(7, hidden=hidden, latent=2, objective="iwae", k=5, estimator="dreg")
        assert set(model_settings(kind)) == set(iwae.config) - {"model"}
        check_model_config(iwae.config, iwae.params.shapes)
        bad = {**iwae.config, "k": "five"}
        with pytest.raises(ValueError, match="'k' is \"five\", not int"):
            check_model_config(bad, iwae.params.shapes)


def test_restore_training_checks_everything_before_changing_anything(tmp_path):
    model, opt = _trained()
    _save(tmp_path / "checkpoint.npz", model, opt)
    ckpt = load_checkpoint(tmp_path)
    target, target_opt = _trained(seed=1)
    params, moments = target.params.flat.copy(), target_opt.state_dict()
    state = target.backend.rng_state()
    cases = {
        "v.flat": lambda c: c.optim_state.update({"v.flat": -c.optim_state["v.flat"] - 1}),
        "rng_state": lambda c: setattr(
            c, "rng_state", json.dumps({"cupy": {"seed": 1, "counter": 0}})
        ),
    }
    for needle, damage in cases.items():
        bad = load_checkpoint(tmp_path)
        damage(bad)
        with pytest.raises(CheckpointError, match=needle):
            restore_training(bad, target, target_opt)
        assert np.array_equal(target.params.flat, params) and target_opt.t == moments["t"]
        assert target.backend.rng_state() == state
    restore_training(ckpt, target, target_opt)  # the sound one is taken whole
    assert np.array_equal(target.params.flat, model.params.flat) and target_opt.t == opt.t
    assert target.backend.rng_state() == ckpt.rng_state


def test_an_entry_that_unpacks_to_far_more_than_it_stores_is_refused(tmp_path):
    """A zip bomb: 40 MB of zeros stored in 40 kB would be unpacked before any check."""
    model, opt = _trained()
    path = _save(tmp_path / "checkpoint.npz", model, opt)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez_compressed(tmp_path / "packed.npz", **arrays)  # a real one, compressed: fine
    assert load_checkpoint(tmp_path / "packed.npz").epoch == 2
    np.savez_compressed(tmp_path / "bomb.npz", **arrays, junk=np.zeros(10**7, np.float32))
    with pytest.raises(CheckpointError, match="entry junk.npy unpacks 40000128 bytes"):
        load_checkpoint(tmp_path / "bomb.npz")


def test_restore_training_refuses_another_dtype_even_without_optimizer_arrays(tmp_path):
    # plain SGD keeps no state arrays, so nothing but the step count reached the dtype check:
    # a float32 run resumed into a float64 model went on silently, no longer the same run
    model, _ = _trained()
    sgd = SGD(1e-2)
    sgd.t = 3
    _save(tmp_path / "checkpoint.npz", model, sgd)
    ckpt = load_checkpoint(tmp_path)
    wide = VAE(12, hidden=[8], latent=3, beta=0.5, backend=Backend("numpy", "float64", seed=1))
    before, state = wide.params.flat.copy(), wide.backend.rng_state()
    with pytest.raises(CheckpointError, match="was trained in float32, not float64; resume with"):
        restore_training(ckpt, wide, SGD(1e-2))
    assert np.array_equal(wide.params.flat, before) and wide.backend.rng_state() == state


def test_restore_training_names_the_model_settings_that_differ(tmp_path):
    model, opt = _trained()
    _save(tmp_path / "checkpoint.npz", model, opt)
    other = VAE(12, hidden=[8], latent=3, beta=2.0, backend=Backend(seed=0))
    with pytest.raises(CheckpointError) as info:
        restore_training(load_checkpoint(tmp_path), other, Adam(1e-2))
    message = str(info.value)
    assert "was trained with a model of beta=0.5, not beta=2.0; resume with" in message
    assert "hidden" not in message and "\n" not in message


def test_copy_params_into_another_model_names_it_and_not_a_damaged_file(tmp_path):
    # copy_params into a model of other sizes said "its config says (12, 16); the file is
    # damaged, train again": the file was sound, the model another (the sizes the model's)
    model, opt = _trained()
    _save(tmp_path / "checkpoint.npz", model, opt)
    ckpt = load_checkpoint(tmp_path)
    for other, want in (
        (VAE(12, hidden=[16], latent=3, beta=0.5), "hidden=[8], not hidden=[16] (parameter "
         "encoder.0.W: (12, 8) there, (12, 16) here); build it with load_model"),
        (VAE(12, hidden=[8, 4], latent=3, beta=0.5), "decoder.2.W: none there, (8, 12) here"),
    ):  # fmt: skip
        before = other.params.flat.copy()
        with pytest.raises(CheckpointError, match="holds a model of ") as info:
            copy_params(ckpt, other)
        assert want in str(info.value) and "damaged" not in str(info.value)
        assert np.array_equal(other.params.flat, before)
    same = VAE(12, hidden=[8], latent=3, beta=2.0)  # other settings, the same shapes: copied
    copy_params(ckpt, same)
    assert np.array_equal(same.params.flat, model.params.flat)
    hand_made = dataclasses.replace(ckpt, params={**ckpt.params, "encoder.0.b": np.zeros(3)})
    with pytest.raises(CheckpointError, match=r"does not match its model config \(parameter "):
        copy_params(hand_made, VAE(12, hidden=[8], latent=3, beta=0.5))


def test_restore_optimizer_names_another_optimizer_or_dtype(tmp_path):
    model, opt = _trained()  # Adam, float32
    _save(tmp_path / "checkpoint.npz", model, opt, train_config={"optimizer": "adam"})
    ckpt = load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="was trained with adam, not sgd; resume with the"):
        restore_optimizer(ckpt, SGD(0.1, momentum=0.9), model)
    wide = VAE(12, hidden=[8], latent=3, beta=0.5, backend=Backend("numpy", "float64"))
    with pytest.raises(CheckpointError, match="was trained in float32, not float64; resume with"):
        restore_optimizer(ckpt, Adam(1e-2), wide)


def test_a_history_that_is_not_one_record_per_epoch_is_never_written(tmp_path):
    # a file load_checkpoint would refuse as damaged: refused before anything is written
    model, opt = _trained()
    for history, needle in [
        ([{"epoch": 1}], "its history holds 1 epoch record, but its epoch is 2"),
        ([{"epoch": 2}, {"epoch": 1}], "its history record 0 is of epoch 2, not 1"),
        ([{"epoch": 1, "step": 3}, {"epoch": 2, "step": 5}], "its step is 6, but its last epoch"),
    ]:
        with pytest.raises(CheckpointError, match=needle) as info:
            _save(tmp_path / "checkpoint.npz", model, opt, history=history)
        assert str(info.value).startswith(f"refusing to save to {tmp_path / 'checkpoint.npz'}: ")
        assert not (tmp_path / "checkpoint.npz").exists()
    # a model saved by hand with no history at all is saved and loads, as before
    _save(tmp_path / "checkpoint.npz", model, opt, epoch=3, history=None)
    assert load_checkpoint(tmp_path).epoch == 3


def test_save_refuses_an_optimizer_state_that_resuming_refuses(tmp_path) -> None:
    """A float32 gradient of 1e20 makes Adam's v inf with the weights unchanged: the file was
    written, and restore_training then refused it ("optimizer state v.flat holds NaN or
    infinite values"), so the run's last good checkpoint had been replaced by one it cannot
    resume (found by the training audit)."""
    import numpy as np  # numpy-boundary: the test's own data

    from scratchvae import VAE, Adam
    from scratchvae.checkpoint import CheckpointError, save_checkpoint

    model, opt = VAE(16, [8], 2, seed=0), Adam()
    _, grads = model.loss_and_grads(np.ones((4, 16), np.float32))
    grads.flat[:] = 1e20
    with np.errstate(over="ignore"):  # the point: g^2 overflows
        opt.step(model.params, grads)  # v = g^2 = inf in float32
    path = tmp_path / "checkpoint.npz"
    with pytest.raises(CheckpointError, match=r"refusing to save to .*optimizer state v\..* NaN"):
        save_checkpoint(path, model, opt, epoch=0, step=1)
    assert not path.exists()


def test_another_backends_generator_state_is_refused_when_saved_and_read_when_loaded(tmp_path):
    """A NumPy model saved with a GPU run's generator state (the load_model-then-save pattern):
    refused when written, since a resume would refuse the file. One written so by hand still
    loads (evaluate and plot need no generator); only a resume refuses it."""
    model, opt = _trained()
    cupy_state = json.dumps({"cupy": {"seed": 1, "counter": 4}})
    with pytest.raises(CheckpointError, match="refusing to save .* CuPy generator state"):
        _save(tmp_path / "c.npz", model, opt, rng_state=cupy_state)
    assert not (tmp_path / "c.npz").exists()
    path = _save(tmp_path / "ok.npz", model, opt)
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["rng_state"] = np.array(cupy_state)
    np.savez(tmp_path / "hand.npz", **arrays)
    ckpt = load_checkpoint(tmp_path / "hand.npz")  # read: its parameters are sound
    target, target_opt = _trained(seed=1)
    with pytest.raises(CheckpointError, match="rng_state cannot be used"):
        restore_training(ckpt, target, target_opt)
