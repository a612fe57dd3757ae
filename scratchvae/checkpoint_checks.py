"""What a checkpoint's metadata must be before anything is built from it.

The ``meta`` and ``rng_state`` entries of a checkpoint are JSON text, and a damaged or crafted
file can hold anything there. Each check raises ValueError (one line naming the entry) unless
the value is of the kind scratchvae itself writes, so that nothing later meets a wrong type (a
TypeError traceback), a layer size the stored arrays do not have (an allocation of terabytes),
or a generator state NumPy's setter cannot take. The model config is checked against what the
model kinds accept (their ``__init__`` arguments) and every size against the stored parameter
arrays' shapes, before the model and its parameter buffer exist. Plain Python: nothing here
allocates an array. :func:`scratchvae.checkpoint.load_checkpoint` runs these checks.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
from collections.abc import Callable, Mapping
from typing import Any

from .mlp import MLP
from .models import MODEL_KINDS, model_classes
from .ops.losses import Likelihood
from .optim import build_optimizer

__all__ = [
    "MAX_COUNT",
    "OPTIONAL_SETTINGS",
    "check_data_fingerprint",
    "check_meta",
    "check_progress",
    "check_rng_state",
    "check_schedule",
    "is_a",
    "model_settings",
    "param_shapes",
]

_INT_RANGE = 1 << 63  # whole numbers beyond an int64 are refused: nothing real is that large
# the most epochs or steps a file may record: no run takes 2**53 steps (285 years at a million
# a second), and one near 2**63 overflowed the int64 step counter on its resume's next step
MAX_COUNT = 1 << 53
# settings a model writes into its config only when they differ from these defaults (a VAE
# trained with the ELBO, k = 1, pathwise, as every file before the IWAE objective): may be absent
OPTIONAL_SETTINGS = {"objective": "elbo", "k": 1, "estimator": "pathwise"}


def _finite(v: Any) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


_IS: dict[str, Callable[[Any], bool]] = {
    "int": lambda v: type(v) is int and -_INT_RANGE <= v < _INT_RANGE,
    "float": lambda v: type(v) in (int, float) and _finite(v),
    "bool": lambda v: type(v) is bool,
    "str": lambda v: type(v) is str,
    "None": lambda v: v is None,
    "Sequence[int]": lambda v: type(v) is list and all(_IS["int"](h) for h in v),
}


def is_a(value: Any, annotation: str) -> bool:
    """Whether a JSON value fits a type annotation written as text, as this package's
    ``__init__`` arguments and dataclass fields are annotated (``int``, ``float | None``,
    ``Sequence[int]``): numbers finite, whole numbers within int64, a bool no number. An
    annotation not listed in ``_IS`` accepts anything (its constructor checks the value)."""
    options = [a.strip() for a in annotation.split("|")]
    return any(_IS.get(a, lambda v: True)(value) for a in options)


def _whole(value: Any) -> bool:
    return _IS["int"](value) and value >= 0


def _check_fields(values: Any, fields: Mapping[str, str], entry: str) -> None:
    """``values`` a JSON object whose known keys hold values of their annotated types."""
    if type(values) is not dict:
        raise ValueError(f"{entry} is not a JSON object")
    for key, annotation in fields.items():
        if key in values and not is_a(values[key], annotation):
            shown = json.dumps(values[key])
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise ValueError(f"{entry} entry {key!r} is {shown}, not {annotation}")


# ------------------------------------------------------------------------------ model config
def model_settings(kind: str) -> dict[str, str]:
    """The settings a model of ``kind`` takes, with their annotations: the keyword arguments of
    its class's ``__init__`` and, through ``**kwargs``, its bases' (backend and seed aside).
    Exactly what its ``config`` holds besides ``model``."""
    settings: dict[str, str] = {}
    for klass in model_classes()[kind].__mro__:  # every model class defines its own __init__
        args = list(inspect.signature(vars(klass)["__init__"]).parameters.values())[1:]
        for a in args:
            if a.kind is a.POSITIONAL_OR_KEYWORD and a.name not in ("backend", "seed"):
                settings.setdefault(a.name, str(a.annotation))
        if not any(a.kind is a.VAR_KEYWORD for a in args):
            break
    return settings


def check_settings(kind: Any, config: Mapping[str, Any]) -> None:
    """A model kind and the names of its settings in ``config`` (``model`` left out), else a
    one-line ValueError: an unknown kind, an unknown setting, n_features missing."""
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model {kind!r}; choose one of {', '.join(MODEL_KINDS)}")
    takes = model_settings(kind)
    unknown = sorted(set(config) - set(takes))
    if unknown or "n_features" not in config:
        what = f"unknown settings {unknown}" if unknown else "no n_features"
        raise ValueError(f"model {kind!r}: {what}; it takes {', '.join(takes)}")


def param_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The parameter shapes ``build_model(config)`` allocates, computed without allocating:
    the encoder maps n_features through the hidden sizes to the code (a VAE's [mu | logvar]:
    twice latent), the decoder maps the code back to the likelihood's output width. Raises
    ValueError for a size < 1, an unknown activation, init or likelihood."""
    n, hidden, latent = config["n_features"], config["hidden"], config["latent"]
    code = 2 * latent if config["model"] == "vae" else latent
    lik = Likelihood(config["likelihood"], config["decoder_std"])
    act, drop, init = config["activation"], config["dropout"], config["init"]
    encoder = MLP("encoder", (n, *hidden, code), act, drop, init)
    decoder = MLP("decoder", (latent, *reversed(hidden), lik.n_out(n)), act, drop, init)
    return {**encoder.shapes(), **decoder.shapes()}


def _sizes(config: Mapping[str, Any]) -> str:
    return ", ".join(f"{k} {config[k]}" for k in ("n_features", "hidden", "latent"))


def check_model_config(config: Any, stored: Mapping[str, tuple[int, ...]]) -> None:
    """``config`` names a model kind, exactly the settings that kind takes, each of its
    type, and sizes that give exactly the ``stored`` parameter shapes (name -> shape)."""
    if type(config) is not dict:
        raise ValueError("model_config is not a JSON object")
    kind = config.get("model")
    if kind not in MODEL_KINDS:
        raise ValueError(
            f"model_config entry 'model' is {kind!r}, not one of {', '.join(MODEL_KINDS)}"
        )
    settings = model_settings(kind)
    unknown = sorted(set(config) - set(settings) - {"model"})
    missing = sorted(set(settings) - set(config) - set(OPTIONAL_SETTINGS))
    if unknown:
        raise ValueError(f"model_config entry {unknown[0]!r} is not a setting of a {kind} model")
    if missing:
        raise ValueError(f"model_config lacks the entry {missing[0]!r}")
    _check_fields(config, settings, "model_config")
    if len(config["hidden"]) >= len(stored):  # more layers than the file has arrays
        raise ValueError(
            f"model_config entry 'hidden' has {len(config['hidden'])} layers, more than the "
            f"{len(stored)} stored parameters allow"
        )
    if not 0 <= config["dropout"] < 1:  # the model itself would find out only in training
        raise ValueError(f"model_config entry 'dropout' is {config['dropout']}, not in [0, 1)")
    try:
        expected = param_shapes(config)
    except ValueError as exc:
        raise ValueError(f"model_config is refused: {exc}") from None
    for name in sorted(set(expected) | set(stored)):
        if expected.get(name) != stored.get(name):
            got = "missing" if name not in stored else f"{stored[name]}"
            want = "no such parameter" if name not in expected else f"{expected[name]}"
            raise ValueError(
                f"model_config ({_sizes(config)}) does not match the stored parameters: "
                f"param/{name} is {got}, the config gives {want}"
            )


# ------------------------------------------------------------------------------ the rest of meta
def _check_history(history: Any) -> None:
    if type(history) is not list:
        raise ValueError("meta entry 'history' is not a list")
    for i, record in enumerate(history):
        ok = type(record) is dict and all(is_a(v, "float") for v in record.values())
        if not ok or not _whole(record.get("epoch")):
            raise ValueError(
                f"meta entry 'history' record {i} is not an epoch number with finite numbers"
            )


def check_progress(epoch: int, step: int, history: list[dict[str, Any]]) -> None:
    """The run's progress, told three times, agrees: a history (when there is one: a model
    saved by hand may have none) holds one record per epoch done, numbered 1 to ``epoch``,
    whose optimizer steps rise (every epoch takes one at least) to ``step``; a record's thread
    count is a whole number >= 1. Raises ValueError (one line) where they disagree, or where
    a record is not an epoch number with finite numbers; its ``kernels`` is 0 or 1."""
    _check_history(history)
    if history and len(history) != epoch:
        n = len(history)
        raise ValueError(
            f"its history holds {n} epoch record{'s' * (n != 1)}, but its epoch is {epoch}"
        )
    before = 0
    for i, record in enumerate(history):
        at, steps, threads = record["epoch"], record.get("step"), record.get("threads")
        if at != i + 1:
            raise ValueError(f"its history record {i} is of epoch {at}, not {i + 1}")
        if steps is not None and not (_whole(steps) and before < steps <= step):
            raise ValueError(
                f"its history record {i} is at step {steps}, not after step {before} and by "
                f"step {step}"
            )
        if threads is not None and not (_whole(threads) and threads >= 1):
            raise ValueError(f"its history record {i} has {threads!r} threads")
        if record.get("kernels") not in (None, 0, 1):  # whether the compiled kernels ran
            raise ValueError(
                f"its history record {i} has kernels {record['kernels']!r}, not 0 or 1"
            )
        before = before if steps is None else steps
    if history and "step" in history[-1] and before != step:
        raise ValueError(f"its step is {step}, but its last epoch ended at step {before}")


def check_schedule(
    epoch: int,
    history: list[dict[str, Any]],
    model_config: Mapping[str, Any],
    train_config: Mapping[str, Any],
    warmup_since: int | None = 1,
) -> None:
    """The run's progress against its settings, as the Trainer writes them: its epoch no more
    than the epochs its train config runs to (``--epochs`` raised on a resume is saved with the
    run), and a VAE's KL weight on record (each epoch's last step's) what the warm-up schedule
    gives (:func:`~scratchvae.train_config.kl_weight_at`, the Trainer's formula: compared
    exactly) from epoch ``warmup_since`` on; the epochs before it followed the warm-up that a
    resume with ``allow_changes=("warmup_epochs",)`` replaced. Not compared: what a file does not
    record (a train config's epochs or warm-up, a record's step or kl_weight) and the numbers
    of other models (files written before kl_weight was a VAE's alone hold a sparse AE's beta
    or 1.0 there), and any KL weight of a file written before ``warmup_since`` was (None: a
    warm-up changed on its resume then was not recorded, so no schedule is known to hold).
    Raises ValueError (one line) where they disagree."""
    from .train_config import kl_weight_at  # noqa: PLC0415 - it imports the checkpoint modules

    target: Any = train_config.get("epochs")  # JSON values, their types checked here
    if type(target) is int and epoch > target:
        raise ValueError(
            f"its epoch is {epoch}, above the {target} epochs its train_config runs to"
        )
    beta: Any = model_config.get("beta")
    warmup: Any = train_config.get("warmup_epochs")
    if model_config.get("model") != "vae" or not (is_a(beta, "float") and is_a(warmup, "float")):
        return
    if warmup_since is None:
        return
    if beta < 0:  # refused by the model itself, naming it (load_model)
        return
    before: Any = 0  # the step the record's epoch began at (None: not recorded)
    for i, record in enumerate(history):
        steps: Any = record.get("step")
        weight = record.get("kl_weight")
        if i + 1 >= warmup_since and None not in (before, steps, weight):
            gives = kl_weight_at(beta, warmup, steps - before, steps - 1)
            if weight != gives:
                raise ValueError(
                    f"its history record {i} has kl_weight {weight!r}, where its warm-up gives "
                    f"{gives!r}"
                )
        before = steps


def check_data_fingerprint(fingerprint: Any) -> None:
    """The ``data_fingerprint`` entry, when there is one (:mod:`scratchvae.fingerprint`)."""
    if fingerprint is None:  # written before data was fingerprinted
        return
    ok = type(fingerprint) is dict and set(fingerprint) == {"shape", "dtype", "blake2b"}
    shape, digest = (fingerprint.get(k) for k in ("shape", "blake2b")) if ok else (None, None)
    ok = ok and type(shape) is list and len(shape) == 2 and all(_whole(n) for n in shape)
    ok = ok and fingerprint["dtype"] == "float32" and type(digest) is str and len(digest) == 32
    if not ok or any(c not in "0123456789abcdef" for c in str(digest)):  # ok: digest is a str
        raise ValueError("meta entry 'data_fingerprint' is not a shape, dtype and blake2b hash")


def _check_train_config(train_config: Any) -> None:
    """The fields TrainConfig knows of their types and values (unknown keys are ignored, as
    ``TrainConfig.from_dict`` ignores them)."""
    from .train import TrainConfig  # noqa: PLC0415 - train imports the checkpoint modules

    fields = {f.name: str(f.type) for f in dataclasses.fields(TrainConfig)}
    _check_fields(train_config, fields, "train_config")
    try:
        c = TrainConfig.from_dict(train_config)
        extra = {"momentum": c.momentum} if c.optimizer == "sgd" else {}  # as the Trainer does
        build_optimizer(c.optimizer, c.lr, c.clip_norm, **extra)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"train_config is refused: {exc}") from None


def _check_backend(backend: Any) -> None:
    _check_fields(backend, {"name": "str", "dtype": "str", "seed": "int"}, "meta backend")
    if backend.get("name", "numpy") not in ("numpy", "cupy"):
        raise ValueError(f"meta backend name {backend['name']!r} is not numpy or cupy")
    if backend.get("dtype", "float32") not in ("float32", "float64"):
        raise ValueError(f"meta backend dtype {backend['dtype']!r} is not float32 or float64")
    if not _whole(backend.get("seed", 0)):
        raise ValueError(f"meta backend seed {backend['seed']!r} is not a whole number >= 0")


def check_meta(meta: Any, params: Mapping[str, Any]) -> None:
    """The ``meta`` entry (parsed JSON) of a checkpoint whose parameter arrays are ``params``
    (name -> array): model config, epoch, step, history (and that the three agree), train
    config, backend, data fingerprint, and the progress against the settings
    (:func:`check_schedule`)."""
    if type(meta) is not dict:
        raise ValueError("meta is not a JSON object")
    for key in ("model_config", "epoch", "step"):
        if key not in meta:
            raise ValueError(f"meta lacks the entry {key!r}")
    for key in ("epoch", "step"):
        if not _whole(meta[key]):
            raise ValueError(f"meta entry {key!r} is {meta[key]!r}, not a whole number >= 0")
        if meta[key] > MAX_COUNT:
            raise ValueError(f"meta entry {key!r} is {meta[key]}, more than a run takes (2**53)")
    check_model_config(meta["model_config"], {k: tuple(v.shape) for k, v in params.items()})
    _check_history(meta.get("history", []))  # its types, named as the meta entry
    try:
        check_progress(meta["epoch"], meta["step"], meta.get("history", []))
    except ValueError as exc:
        raise ValueError(f"{exc} (not as scratchvae writes a checkpoint)") from None
    check_data_fingerprint(meta.get("data_fingerprint"))
    _check_train_config(meta.get("train_config", {}))
    _check_backend(meta.get("backend", {}))
    shape = meta.get("image_shape")  # None: written before it was recorded
    n_features = meta["model_config"]["n_features"]
    if shape is not None and not (
        type(shape) is list and len(shape) == 2 and all(_whole(n) and n >= 1 for n in shape)
        and shape[0] * shape[1] == n_features
    ):  # fmt: skip
        what = f"{shape!r}"[:40]  # a crafted one may be long
        raise ValueError(f"meta entry 'image_shape' is {what}, not (H, W) of {n_features} pixels")
    since = meta.get("warmup_since")  # None: written before it was recorded
    if since is not None and not (_whole(since) and 1 <= since <= meta["epoch"] + 1):
        raise ValueError(f"meta entry 'warmup_since' is {since!r}, not an epoch of the run")
    try:  # its types checked above
        check_schedule(meta["epoch"], meta.get("history", []), meta["model_config"],
                       meta.get("train_config", {}), since)  # fmt: skip
    except ValueError as exc:
        raise ValueError(f"{exc} (not as scratchvae writes a checkpoint)") from None


# ------------------------------------------------------------------------------ generator state
def _check_cupy_state(state: dict[str, Any]) -> None:
    inner = state["cupy"]
    if type(inner) is not dict or set(inner) != {"seed", "counter"}:
        raise ValueError("rng_state: a CuPy state is {'cupy': {'seed': ..., 'counter': ...}}")
    if not all(_whole(inner[k]) and inner[k] < 1 << 64 for k in ("seed", "counter")):
        raise ValueError("rng_state: the CuPy seed and counter must be whole numbers < 2**64")


def _check_numpy_state(state: dict[str, Any]) -> None:
    """NumPy's PCG64 state: {"bit_generator": "PCG64", "state": {"state", "inc"},
    "has_uint32", "uinteger"}, each number in its range (NumPy's setter would raise a
    TypeError, ValueError or OverflowError, or silently truncate a float)."""
    if set(state) != {"bit_generator", "state", "has_uint32", "uinteger"}:
        raise ValueError("rng_state is neither a NumPy (PCG64) nor a CuPy generator state")
    if state["bit_generator"] != "PCG64":
        raise ValueError(f"rng_state is for the generator {state['bit_generator']!r}, not PCG64")
    inner = state["state"]
    if type(inner) is not dict or set(inner) != {"state", "inc"}:
        raise ValueError("rng_state: a PCG64 state is {'state': ..., 'inc': ...}")
    numbers = [(inner["state"], 128), (inner["inc"], 128), (state["uinteger"], 32)]
    numbers.append((state["has_uint32"], 1))
    if not all(type(v) is int and 0 <= v < 1 << bits for v, bits in numbers):
        raise ValueError("rng_state: the PCG64 state's numbers are out of range")


def check_rng_state(text: str, trained_on: str | None = None) -> None:
    """The ``rng_state`` entry: JSON of a NumPy (PCG64) or CuPy generator state, or the old
    CuPy format ``{"cupy_seed": n}``; of the backend the run was ``trained_on`` (its meta's
    name, when it records one). Restored on another backend, it reseeds there
    (:meth:`Backend.set_rng_state`)."""
    try:
        state = json.loads(text)
    except (ValueError, RecursionError):
        raise ValueError("entry 'rng_state' is not valid JSON") from None
    if type(state) is not dict:
        raise ValueError("rng_state is not a JSON object")
    if ("cupy" in state or "cupy_seed" in state) and len(state) != 1:  # nothing beside them
        raise ValueError("rng_state is neither a NumPy (PCG64) nor a CuPy generator state")
    if "cupy" in state:
        _check_cupy_state(state)
    elif "cupy_seed" in state:
        if not _whole(state["cupy_seed"]):
            raise ValueError("rng_state: the CuPy seed must be a whole number >= 0")
    else:
        _check_numpy_state(state)
    cupy = "cupy" in state or "cupy_seed" in state
    if cupy and trained_on == "numpy" or not cupy and trained_on == "cupy":
        kind = "a CuPy" if cupy else "a NumPy"
        raise ValueError(
            f"rng_state is {kind} generator state, but the run was trained on {trained_on}"
        )
