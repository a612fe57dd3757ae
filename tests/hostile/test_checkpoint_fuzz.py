"""Fuzzing checkpoint files: every damaged or crafted file resumes or is refused with the
project's own error (CheckpointError, DataError, BackendError), never another exception and
never a crash (issue 13, "what it must show", item 2).

Each example starts from a real checkpoint (a VAE on the digits, one Adam step) and changes it:
entries replaced by arrays of random shapes and dtypes (object, str, complex, int, bool, float16
included), removed, added, poked with NaN / inf / 1e300, reshaped or cast; the ``meta`` and
``rng_state`` JSON changed at any depth (or replaced by random JSON or text); the file's bytes
truncated or flipped. Then the resume path runs in full: ``load_checkpoint``, ``load_model``, a
:class:`Trainer` whose ``_resume`` restores the parameters, optimizer and generator state
(``restore_training``), and, when all that succeeded, one training step with the compiled
kernels on: the kernels only ever see arrays that passed every check.

Run many more examples with ``SCRATCHVAE_HYPOTHESIS_PROFILE=thorough``.
"""

from __future__ import annotations

import functools
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np  # numpy-boundary: writing crafted files
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from scratchvae.backend import BackendError, kernels
from scratchvae.checkpoint import CheckpointError, load_checkpoint, load_model, save_checkpoint
from scratchvae.data import DataError, load_dataset
from scratchvae.models import VAE
from scratchvae.optim import Adam
from scratchvae.train import TrainConfig, Trainer

PROJECT_ERRORS = (CheckpointError, DataError, BackendError)
DELETE = object()  # a mutation's value: remove the entry


@functools.cache
def _digits() -> Any:
    return load_dataset("digits", "train")


@functools.cache
def _base() -> tuple[dict[str, np.ndarray], bytes]:
    """A real checkpoint's arrays and bytes: VAE 64-4-2 after one Adam step."""
    model = VAE(64, hidden=[4], latent=2, seed=0)
    opt = Adam(1e-3)
    opt.step(model.params, model.loss_and_grads(model.backend.uniform((8, 64)))[1])
    config = TrainConfig(epochs=3, batch_size=64, progress=False, data="digits")
    record = {"epoch": 1, "step": 1, "train_loss": 50.0, "val_loss": 51.0, "seconds": 0.1}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.npz"
        save_checkpoint(
            path, model, opt, epoch=1, step=1, train_config=config.to_dict(), history=[record]
        )
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}, path.read_bytes()


def _resume(path: Path) -> str:
    """The resume path, start to finish; 'resumed' or 'refused' (a project error, one line)."""
    try:
        ckpt = load_checkpoint(path)
        model, _ = load_model(ckpt)
        config = TrainConfig.from_dict(ckpt.train_config, out_dir=str(path.parent))
        trainer = Trainer(model, _digits(), config)
        trainer._resume()
    except PROJECT_ERRORS as exc:
        assert "\n" not in str(exc), str(exc)
        return "refused"
    x = model.backend.asarray(_digits().get_batch(np.arange(16)))
    with kernels(True), np.errstate(all="ignore"):  # extreme finite values may overflow
        trainer.train_step(x, 1.0)
    return "resumed"


def _check(arrays: dict[str, Any] | None, raw: bytes | None = None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "checkpoint.npz"
        if arrays is not None:
            np.savez(path, **arrays)  # object arrays are pickled: loading must refuse them
        else:
            path.write_bytes(raw)
        return _resume(path)


def test_the_unchanged_base_checkpoint_resumes():
    assert _check(dict(_base()[0])) == "resumed"


# ------------------------------------------------------------------ the arrays
DTYPES = ["float32", "float64", "float16", "int8", "int64", "uint8", "bool", "complex64", "U4"]
random_arrays = st.one_of(
    hnp.arrays(
        st.sampled_from(DTYPES),
        hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6),
    ),
    st.just(np.array([None, {"a": 1}], dtype=object)),
)
ARRAY_KEYS = sorted(_base()[0])
FLOAT_KEYS = [k for k in ARRAY_KEYS if k.startswith(("param/", "optim/")) and k != "optim/t"]
NEW_KEYS = ["param/encoder.2.W", "param/extra", "optim/m.extra", "optim/v", "junk"]


@st.composite
def array_mutation(draw: st.DrawFn) -> tuple:
    what = draw(st.sampled_from(["set", "delete", "poke", "reshape", "cast"]))
    if what == "set":
        return what, draw(st.sampled_from(ARRAY_KEYS + NEW_KEYS)), draw(random_arrays)
    if what == "delete":
        return what, draw(st.sampled_from(ARRAY_KEYS)), None
    key = draw(st.sampled_from(FLOAT_KEYS))
    if what == "poke":
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf, 1e300, -1e39, -0.0, 1e-45, -1.0]))
        return what, key, (draw(st.integers(0, 10**6)), value)
    if what == "reshape":
        return what, key, draw(st.sampled_from(["flat", "column", "transpose", "grow", "shrink"]))
    return what, key, draw(st.sampled_from(["float64", "float16", "int32", "complex64", ">f4"]))


def _apply_array(arrays: dict[str, Any], mutation: tuple) -> None:
    what, key, arg = mutation
    if what == "set":
        arrays[key] = arg
    elif what == "delete":
        arrays.pop(key, None)
    elif key in arrays and arrays[key].dtype.kind == "f" and arrays[key].size:
        with np.errstate(all="ignore"):  # -1e39 is -inf in float32, NaN as int32: the point
            arrays[key] = _changed(arrays[key].copy(), what, arg)


def _changed(a: np.ndarray, what: str, arg: Any) -> np.ndarray:
    if what == "poke":
        a = a.astype(np.float64) if arg[1] == 1e300 else a  # finite in float64 only
        a.flat[arg[0] % a.size] = arg[1]
        return a
    if what == "reshape":
        flat = a.reshape(-1)
        return {
            "flat": flat,
            "column": a.reshape(-1, 1),
            "transpose": a.T,
            "grow": np.concatenate([flat, flat[:1]]),
            "shrink": flat[:-1],
        }[arg]
    return a.astype(arg)


@given(st.lists(array_mutation(), min_size=1, max_size=3))
def test_fuzzed_arrays_resume_or_are_refused(mutations):
    arrays = dict(_base()[0])
    for m in mutations:
        _apply_array(arrays, m)
    event(_check(arrays))  # --hypothesis-show-statistics: how many of each


# ------------------------------------------------------------------ the JSON entries
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["vae", "ae", "relu", "he", "adam", "sgd", "digits", "PCG64", "float64"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
META_PATHS = [
    "",
    "model_config",
    *(f"model_config.{k}" for k in ["model", "n_features", "hidden", "hidden.0", "latent"]),
    *(f"model_config.{k}" for k in ["activation", "likelihood", "init", "beta", "dropout"]),
    *(f"model_config.{k}" for k in ["decoder_std", "rho", "unknown"]),
    "epoch",
    "step",
    "history",
    "history.0",
    "history.0.epoch",
    "history.0.val_loss",
    "train_config",
    *(f"train_config.{k}" for k in ["epochs", "batch_size", "lr", "optimizer", "momentum"]),
    *(f"train_config.{k}" for k in ["clip_norm", "patience", "seed", "binarize", "data"]),
    *(f"train_config.{k}" for k in ["val_fraction", "warmup_epochs", "log_every", "x"]),
    "backend",
    "backend.name",
    "backend.dtype",
    "backend.seed",
]
RNG_PATHS = ["", "bit_generator", "state", "state.state", "state.inc", "has_uint32"]
RNG_PATHS += ["uinteger", "cupy", "cupy.seed", "cupy_seed"]


def _set(doc: Any, path: str, value: Any) -> Any:
    """``doc`` with the entry at the dotted ``path`` set to ``value`` (DELETE: removed); an
    entry whose parent is not a container (an earlier change replaced it) is left alone."""
    if not path:
        return {} if value is DELETE else value
    *parents, last = path.split(".")
    node = doc
    for key in parents:
        if isinstance(node, dict) and key in node:
            node = node[key]
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return doc
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        if value is DELETE:
            del node[int(last)]
        else:
            node[int(last)] = value
    elif isinstance(node, dict):
        if value is DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


json_change = st.one_of(json_values, st.just(DELETE))
json_mutation = st.one_of(
    st.tuples(st.just("meta"), st.sampled_from(META_PATHS), json_change),
    st.tuples(st.just("rng_state"), st.sampled_from(RNG_PATHS), json_change),
    st.tuples(st.sampled_from(["meta", "rng_state"]), st.just("text"), st.text(max_size=30)),
)


@given(st.lists(json_mutation, min_size=1, max_size=4))
def test_fuzzed_meta_and_rng_state_resume_or_are_refused(mutations):
    arrays = dict(_base()[0])
    docs = {key: json.loads(str(arrays[key])) for key in ("meta", "rng_state")}
    texts: dict[str, str] = {}
    for entry, path, value in mutations:
        if path == "text":
            texts[entry] = value
        else:
            docs[entry] = _set(docs[entry], path, value)
            texts.pop(entry, None)
    for entry in ("meta", "rng_state"):
        arrays[entry] = np.array(texts.get(entry, json.dumps(docs[entry])))
    event(_check(arrays))  # --hypothesis-show-statistics: how many of each


# ------------------------------------------------------------------ the bytes
@given(
    st.lists(
        st.tuples(st.sampled_from(["truncate", "flip"]), st.floats(0, 1), st.integers(1, 255)),
        min_size=1,
        max_size=3,
    )
)
def test_fuzzed_bytes_resume_or_are_refused(damage):
    raw = bytearray(_base()[1])
    for what, where, byte in damage:
        at = int(where * (len(raw) - 1))
        if what == "truncate":
            del raw[at:]
        elif raw:
            raw[at] ^= byte
    event(_check(None, bytes(raw)))  # --hypothesis-show-statistics: how many of each
