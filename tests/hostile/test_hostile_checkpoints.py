"""Hostile checkpoints and run folders (issue 13, checkpoints and resuming): each case ends in
one ``scratchvae: error: ...`` line with exit status 2 and the checkpoint's bytes unchanged, or
in a clear CheckpointError from the library; never a traceback, never a huge allocation.

T = ``scratchvae train --hidden 32 --latent 2 --epochs 2 --no-progress --no-figures --out run``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np  # numpy-boundary: writing crafted files
import pytest

from scratchvae import atomic
from scratchvae.atomic import FolderLocked, atomic_write, folder_lock
from scratchvae.backend import Backend, BackendError
from scratchvae.checkpoint import CheckpointError, load_checkpoint, load_model
from scratchvae.cli import main
from scratchvae.data import load_dataset
from scratchvae.models import VAE
from scratchvae.train import TrainConfig, Trainer

T = ["--hidden", "32", "--latent", "2", "--epochs", "2", "--no-progress", "--no-figures"]
RESUME = ["--resume", "--epochs", "3", "--no-progress", "--no-figures"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hostile-ckpt") / "run"
    assert main(["train", "--out", str(out), *T]) == 0
    return out


def _arrays(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _meta(run: Path) -> dict:
    return json.loads(str(_arrays(run)["meta"]))


def _crafted(run: Path, tmp_path: Path, meta: dict | None = None, **changes) -> Path:
    """A copy of run folder ``run`` whose checkpoint has ``meta`` and the entries ``changes``
    (None removes one)."""
    arrays = {**_arrays(run), **changes}
    if meta is not None:
        arrays["meta"] = np.array(json.dumps(meta))
    out = tmp_path / "crafted"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes())
    np.savez(out / "checkpoint.npz", **{k: v for k, v in arrays.items() if v is not None})
    return out


def _with(meta: dict, where: str, value, delete: bool = False) -> dict:
    """``meta`` with the entry at ``where`` ("model_config.hidden", "epoch") set or deleted."""
    meta = json.loads(json.dumps(meta))
    *parents, last = where.split(".")
    node = meta
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if delete:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return meta


MAIN = "import sys; from scratchvae.cli import main; sys.exit(main(sys.argv[1:]))"
BATCH = """
import contextlib, io, json, sys, traceback
from scratchvae.cli import main
results = {}
for name, argv in json.loads(sys.stdin.read()).items():
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main(argv)
        except BaseException:  # what the interpreter would print for an uncaught exception
            traceback.print_exc()
            rc = 1
    results[name] = {"returncode": rc, "stdout": out.getvalue(), "stderr": err.getvalue()}
sys.__stdout__.write(json.dumps(results))
"""


def _cli_batch(calls: dict[str, list[str]]) -> dict[str, subprocess.CompletedProcess]:
    """Many command lines run one after another by ``main`` in ONE subprocess (kernels on):
    what each would print and return, without paying the start-up (a second) per command.
    ``main`` returns the exit status; an exception escaping it is printed as a traceback."""
    env = {**os.environ, "SCRATCHVAE_KERNELS": "1"}
    proc = subprocess.run(
        [sys.executable, "-c", BATCH],
        input=json.dumps(calls),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]  # a crash (SIGSEGV: -11) ends up here
    done = json.loads(proc.stdout)
    return {k: subprocess.CompletedProcess(calls[k], **v) for k, v in done.items()}


def _error_line(result: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit status 2, no traceback, exactly one ``scratchvae: error:`` line on stderr (the
    last), which contains every needle."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("scratchvae: error:")]
    assert len(errors) == 1 and errors[0] == lines[-1], result.stderr
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


def _refused_unchanged(out: Path, result: subprocess.CompletedProcess, before: bytes, *needles):
    line = _error_line(result, *needles)
    assert (out / "checkpoint.npz").read_bytes() == before
    return line


# ------------------------------------------------------------------ the CLI cases, one subprocess
def _poked(run: Path, key: str, value: float) -> np.ndarray:
    a = _arrays(run)[key].astype(np.float64)
    a.flat[7] = value
    return a


def _meta_change(entry: str, value):
    return lambda run: {"meta": _with(_meta(run), entry, value)}


def _rng(text: str):
    return lambda run: {"rng_state": np.array(text)}


NUMPY_STATE = {"bit_generator": "PCG64", "state": {"state": 1, "inc": 3}}
NUMPY_STATE |= {"has_uint32": 0, "uinteger": 0}


def _state(**changes) -> str:
    state = json.loads(json.dumps(NUMPY_STATE))
    for key, value in changes.items():
        if key in ("state", "inc"):
            state["state"][key] = value
        else:
            state[key] = value
    return json.dumps(state)


SAME = lambda run: {}  # noqa: E731 - the run as trained
EVALUATE = ["--iw-samples", "2"]

# name -> (what the crafted checkpoint changes, the command, its extra flags, what the one
# error line must say). Each is a case the issue found ending in a traceback or silently.
CLI_CASES = {
    # defect 3: an unknown model_config key was a TypeError traceback; hidden [10**12] tried
    # to allocate 990 TiB
    "unknown-key-evaluate": (
        _meta_change("model_config.foo", 1),
        "evaluate",
        EVALUATE,
        ["model_config entry 'foo' is not a setting of a vae"],
    ),
    "unknown-key-resume": (
        _meta_change("model_config.foo", 1),
        "resume",
        [],
        ["model_config entry 'foo'"],
    ),
    "hidden-1e12-evaluate": (
        _meta_change("model_config.hidden", [10**12]),
        "evaluate",
        EVALUATE,
        ["hidden [1000000000000]", "does not match"],
    ),
    "hidden-1e12-resume": (
        _meta_change("model_config.hidden", [10**12]),
        "resume",
        [],
        ["hidden [1000000000000]", "does not match"],
    ),
    # defect 4: a malformed rng_state was a TypeError traceback on --resume
    "rng-not-json": (_rng("not json {"), "resume", [], ["'rng_state' is not valid JSON"]),
    "rng-cupy-on-numpy": (
        _rng(json.dumps({"cupy": {"seed": 1, "counter": 0}})),
        "resume",
        [],
        [
            "its rng_state cannot be used: rng_state is a CuPy generator state, but the run was "
            "trained on numpy"
        ],
    ),
    "rng-text-number": (_rng(_state(state="x")), "resume", [], ["rng_state", "out of range"]),
    # defect 5: NaN parameters loaded silently, evaluate printed NaN with exit status 0
    "nan-param-evaluate": (
        lambda run: {"param/encoder.0.W": _poked(run, "param/encoder.0.W", np.nan)},
        "evaluate",
        EVALUATE,
        ["encoder.0.W holds NaN or infinite values"],
    ),
    "inf-param-evaluate": (
        lambda run: {"param/decoder.1.b": _poked(run, "param/decoder.1.b", -np.inf)},
        "evaluate",
        EVALUATE,
        ["decoder.1.b holds NaN or infinite values"],
    ),
    "nan-param-resume": (
        lambda run: {"param/encoder.0.W": _poked(run, "param/encoder.0.W", np.nan)},
        "resume",
        [],
        ["encoder.0.W holds NaN or infinite values"],
    ),
    # meta: a bad train_config value was a TypeError traceback (TrainConfig compared "x" > 0)
    "lr-text-resume": (
        _meta_change("train_config.lr", "x"),
        "resume",
        [],
        ["train_config entry 'lr' is \"x\", not float"],
    ),
    # resume with other flags: silently ignored, or (same width) trained on other data
    "flags-hidden-data": (
        SAME,
        "resume",
        ["--hidden", "64", "--data", "mnist"],
        [
            "/crafted/checkpoint.npz was trained with --hidden 32 --data digits; you asked for "
            "--hidden 64 --data mnist; drop those flags to resume, or use another --out"
        ],
    ),
    "flags-model": (
        SAME,
        "resume",
        ["--model", "ae"],
        ["was trained with --model vae; you asked for --model ae;"],
    ),
    "flags-same-width-data": (
        SAME,
        "resume",
        ["--data", "{base}/other.npy"],
        ["was trained with --data digits; you asked for --data "],
    ),
    # the run's progress told three ways that disagree: trusted, it resumed silently wrong
    "history-short-resume": (
        lambda run: {"meta": _with(_meta(run), "history", _meta(run)["history"][:1])},
        "resume",
        [],
        [
            "/crafted/checkpoint.npz is damaged: its history holds 1 epoch record, but its epoch "
            "is 2 (not as scratchvae writes a checkpoint); use another checkpoint or train again"
        ],
    ),  # fmt: skip
    "history-short-evaluate": (
        lambda run: {"meta": _with(_meta(run), "history", _meta(run)["history"][:1])},
        "evaluate",
        EVALUATE,
        ["is damaged: its history holds 1 epoch record, but its epoch is 2"],
    ),
    "optimizer-step-resume": (
        lambda run: {"optim/t": np.array(43)},
        "resume",
        [],
        ["is damaged: its optimizer state is at step 43, but the run at step 44 (not as"],
    ),
    "no-history-resume": (
        _meta_change("history", []),
        "resume",
        [],
        ["is damaged: it records no history of its 2 epochs (not as scratchvae writes"],
    ),
    "steps-per-epoch-resume": (
        lambda run: {
            "meta": _with(
                _with(_with(_meta(run), "step", 40), "history.0.step", 20), "history.1.step", 40
            ),
            "optim/t": np.array(40),
        },
        "resume",
        [],
        ["is damaged: its last epoch took 20 steps, where its data and batch size give 22"],
    ),  # fmt: skip
}


JSON_CASE = {  # finite parameters can still overflow: a decoder bias of 3e38
    "json-overflow": (
        lambda run: {"param/decoder.1.b": np.full(64, 3e38, np.float32)},
        "evaluate",
        [*EVALUATE, "--json"],
        [],
    )
}


@pytest.fixture(scope="module")
def cli_results(run_dir, tmp_path_factory) -> dict[str, tuple]:
    """Every CLI case run in one subprocess: name -> (result, run folder, its bytes before)."""
    base = tmp_path_factory.mktemp("cli-cases")
    np.save(base / "other.npy", np.random.default_rng(0).random((200, 64), np.float32))
    calls, folders = {}, {}
    for name, (change, command, flags, _) in {**CLI_CASES, **JSON_CASE}.items():
        (base / name).mkdir()
        changes = change(run_dir)
        out = _crafted(run_dir, base / name, changes.pop("meta", None), **changes)
        head = ["evaluate", str(out)] if command == "evaluate" else ["train", "--out", str(out)]
        calls[name] = [*head, *(RESUME if command == "resume" else []), *flags]
        calls[name] = [a.format(base=base) for a in calls[name]]
        folders[name] = (out, (out / "checkpoint.npz").read_bytes())
    t0 = time.perf_counter()
    results = _cli_batch(calls)
    assert time.perf_counter() - t0 < 120  # nothing tried to allocate terabytes
    return {name: (results[name], *folders[name]) for name in calls}


@pytest.mark.parametrize("name", list(CLI_CASES))
def test_the_cli_refuses_a_hostile_checkpoint_with_one_line(cli_results, run_dir, name):
    """Exit status 2, one error line, no traceback; the run folder as it was."""
    result, out, before = cli_results[name]
    _error_line(result, *CLI_CASES[name][3])
    assert (out / "checkpoint.npz").read_bytes() == before
    assert (out / "metrics.jsonl").read_bytes() == (run_dir / "metrics.jsonl").read_bytes()


def test_evaluate_json_never_prints_bare_nan(cli_results):
    """`evaluate --json` printed a bare NaN, which is not JSON: non-finite figures are null."""
    result = cli_results["json-overflow"][0]
    assert result.returncode == 0, result.stderr

    def refuse(constant):
        raise AssertionError(f"bare {constant} in the JSON output")

    results = json.loads(result.stdout, parse_constant=refuse)
    assert results["neg_elbo"] is None and results["iw_bound"] is None
    assert isinstance(results["kl"], float) and results["n"] > 0


# ------------------------------------------------------------------ defect 3: the model config
@pytest.mark.parametrize(
    "entry, value, needle",
    [
        ("model_config.model", "gan", "'model' is 'gan'"),
        ("model_config.hidden", "32", "'hidden' is \"32\", not Sequence[int]"),
        ("model_config.hidden", [32.0], "'hidden' is [32.0]"),
        ("model_config.hidden", [True], "'hidden' is [true]"),
        ("model_config.latent", 2.5, "'latent' is 2.5, not int"),
        ("model_config.latent", 10**30, "'latent'"),
        ("model_config.n_features", 65, "param/decoder.1.W is (32, 64), the config gives (32, 65)"),
        ("model_config.latent", 3, "does not match the stored parameters"),
        ("model_config.hidden", [32, 32], "does not match the stored parameters"),
        ("model_config.hidden", [0], "sizes must be >= 1"),
        ("model_config.hidden", [1] * 100, "more than the 8 stored parameters allow"),
        ("model_config.activation", 5, "'activation' is 5, not str"),
        ("model_config.activation", "swish", "unknown activation 'swish'"),
        ("model_config.likelihood", "poisson", "unknown likelihood"),
        ("model_config.init", "zeros", "unknown init"),
        ("model_config.decoder_std", float("nan"), "'decoder_std' is NaN"),
        ("model_config.beta", -1.0, "beta must be >= 0"),
        ("model_config.beta", "1", "'beta' is \"1\", not float"),
        ("model_config.beta", 10**400, "'beta' is 1000"),  # a whole number beyond any float
        ("model_config.dropout", 1.0, "'dropout' is 1.0, not in [0, 1)"),
        ("model_config", [], "model_config is not a JSON object"),
    ],
)
def test_model_config_values_are_refused_naming_the_entry(run_dir, tmp_path, entry, value, needle):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), entry, value))
    with pytest.raises(CheckpointError) as info:
        load_model(out)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_a_missing_model_config_entry_is_named(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), "model_config.latent", 0, True))
    with pytest.raises(CheckpointError, match="model_config lacks the entry 'latent'"):
        load_checkpoint(out)


def test_a_checkpoint_that_is_a_folder_is_not_readable(tmp_path):
    (tmp_path / "checkpoint.npz").mkdir()
    # the OS's own words for it differ (Linux: "[Errno 21] Is a directory", Windows: a
    # permission error); scratchvae's part of the message is what is checked
    with pytest.raises(
        CheckpointError,
        match=r"checkpoint.npz is not a readable scratchvae checkpoint \(truncated or not an "
        r"\.npz: .+\); use another checkpoint or train again$",
    ) as info:
        load_checkpoint(tmp_path)
    assert "\n" not in str(info.value)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")
@pytest.mark.parametrize("name", ["checkpoint.npz", "b.ckpt"])
def test_a_checkpoint_that_is_a_named_pipe_is_refused_at_once(tmp_path, name):
    # opening a pipe for reading waits for a writer: the command hung until killed
    os.mkfifo(tmp_path / name)
    where = tmp_path if name == "checkpoint.npz" else tmp_path / name
    with pytest.raises(CheckpointError, match=r"is not a regular file \(a pipe or a device\)"):
        load_checkpoint(where)
    cmd = [sys.executable, "-m", "scratchvae", "evaluate", str(where)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "not a regular file" in done.stderr


def test_a_checkpoint_without_parameters_is_damaged(run_dir, tmp_path):
    params = {k: None for k in _arrays(run_dir) if k.startswith("param/")}
    out = _crafted(run_dir, tmp_path, **params)
    with pytest.raises(CheckpointError, match="is damaged: it holds no parameters"):
        load_checkpoint(out)


def test_an_entry_of_another_model_kind_is_not_a_setting(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), "model_config.rho", 0.05))
    with pytest.raises(CheckpointError, match="'rho' is not a setting of a vae model"):
        load_checkpoint(out)


# ------------------------------------------------------------------ defect 4: the generator state
@pytest.mark.parametrize(
    "rng_state, needle",
    [
        ("[1, 2]", "not a JSON object"),
        ("[" * 100_000, "not valid JSON"),  # nested too deep for the parser
        (json.dumps({"bit_generator": "PCG64"}), "neither a NumPy"),
        (json.dumps({**NUMPY_STATE, "bit_generator": "MT19937"}), "'MT19937', not PCG64"),
        (json.dumps({**NUMPY_STATE, "state": [1, 3]}), "a PCG64 state is"),
        (_state(state=-1), "out of range"),
        (_state(inc=2**200), "out of range"),
        (_state(state=1.5), "out of range"),  # NumPy itself would truncate it silently
        (_state(has_uint32=True), "out of range"),
        (_state(uinteger=2**32), "out of range"),
        (json.dumps({"cupy": {"seed": -1, "counter": 0}}), "whole numbers < 2**64"),
        (json.dumps({"cupy": [1]}), "a CuPy state is"),
        (json.dumps({"cupy_seed": "x"}), "CuPy seed"),
        # a CuPy state with more beside it: passed the checks, then the NumPy backend's setter
        # refused it naming nothing ("cannot be restored ('state')"), and CuPy's dropped it
        (json.dumps({"cupy": {"seed": 1, "counter": 0}, **NUMPY_STATE}), "neither a NumPy"),
        (json.dumps({"cupy_seed": 1, "x": 2}), "neither a NumPy"),
    ],
)
def test_malformed_rng_states_are_refused_when_loaded(run_dir, tmp_path, rng_state, needle):
    out = _crafted(run_dir, tmp_path, rng_state=np.array(rng_state))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(out)
    assert needle in str(info.value) and "\n" not in str(info.value)
    assert main(["train", "--out", str(out), *RESUME]) == 2


@pytest.mark.parametrize(
    "state",
    [
        *[None, "{", "[]", '{"bit_generator": "PCG64"}', _state(state="x")],
        *[_state(state=-1), _state(inc=-3)],  # NumPy 1 wrapped these round without a word
    ],
)
def test_set_rng_state_refuses_bad_input_with_a_backend_error_and_changes_nothing(state):
    bk, ref = Backend("numpy", seed=4), Backend("numpy", seed=4)
    with pytest.raises(BackendError) as info:
        bk.set_rng_state(state)
    assert "\n" not in str(info.value)
    assert np.array_equal(bk.normal((5,)), ref.normal((5,)))  # the same stream as before


def test_rng_state_of_the_wrong_type_entry_is_refused(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path, rng_state=np.array([1.0, 2.0]))
    with pytest.raises(CheckpointError, match=r"'rng_state' is float64\[2\], not text"):
        load_checkpoint(out)


# ------------------------------------------------------------------ defect 5: non-finite values
@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e300])
def test_non_finite_parameters_are_refused(run_dir, tmp_path, bad):
    """1e300 is finite in float64, but not in the float32 model it would be copied into."""
    out = _crafted(
        run_dir, tmp_path, **{"param/encoder.0.W": _poked(run_dir, "param/encoder.0.W", bad)}
    )
    with pytest.raises(CheckpointError, match="encoder.0.W holds NaN or infinite values"):
        load_model(out)
    assert main(["evaluate", str(out), *EVALUATE]) == 2


@pytest.mark.parametrize("dtype", [np.int32, np.complex64, np.bool_, "U3"])
def test_parameters_that_are_not_floating_point_are_refused(run_dir, tmp_path, dtype):
    b = np.zeros(32, dtype=dtype)
    out = _crafted(run_dir, tmp_path, **{"param/encoder.0.b": b})
    with pytest.raises(CheckpointError, match="encoder.0.b is .*, not floating point"):
        load_model(out)


# ------------------------------------------------------------------ the rest of meta
@pytest.mark.parametrize(
    "entry, value, needle",
    [
        ("epoch", -1, "'epoch' is -1, not a whole number >= 0"),
        ("epoch", 1.5, "'epoch' is 1.5"),
        ("epoch", "2", "'epoch' is '2'"),
        ("epoch", True, "'epoch' is True"),
        ("step", 2**70, "'step'"),
        ("step", None, "'step' is None"),
        ("history", {}, "'history' is not a list"),
        ("history.0", [1], "record 0"),
        ("history.1.train_loss", float("nan"), "record 1"),
        ("history.0.train_loss", "x", "record 0"),
        ("history.0.epoch", 0.5, "record 0"),
        ("train_config", [], "train_config is not a JSON object"),
        ("train_config.lr", "x", "train_config entry 'lr' is \"x\", not float"),
        ("train_config.lr", float("inf"), "train_config entry 'lr' is Infinity"),
        ("train_config.lr", 0, "learning rate must be > 0"),
        ("train_config.epochs", 0, "epochs must be >= 1"),
        ("train_config.batch_size", 2.5, "'batch_size' is 2.5, not int"),
        ("train_config.binarize", "sometimes", "unknown binarization"),
        ("train_config.progress", 1, "'progress' is 1, not bool"),
        ("train_config.data", 5, "'data' is 5, not str | None"),
        ("train_config.patience", 0, "train_config is refused: early stopping needs"),
        ("backend", "numpy", "meta backend is not a JSON object"),
        ("backend.dtype", "float16", "dtype 'float16'"),
        ("backend.name", "torch", "name 'torch'"),
        ("backend.seed", -3, "seed -3"),
    ],
)
def test_meta_fields_are_refused_naming_the_entry(run_dir, tmp_path, entry, value, needle):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), entry, value))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(out)
    assert needle in str(info.value) and "\n" not in str(info.value), str(info.value)


@pytest.mark.parametrize("entry", ["model_config", "epoch", "step"])
def test_required_meta_entries(run_dir, tmp_path, entry):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), entry, None, delete=True))
    with pytest.raises(CheckpointError, match=f"meta lacks the entry '{entry}'"):
        load_checkpoint(out)


def test_unknown_train_config_keys_are_ignored(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), "train_config.future", [1, 2]))
    assert load_checkpoint(out).train_config["future"] == [1, 2]


# ------------------------------------------------------------------ epoch, step and history agree
def _dropped(meta: dict) -> dict:
    return _with(meta, "history", meta["history"][:1])


def _swapped(meta: dict) -> dict:
    return _with(meta, "history", meta["history"][::-1])


def _one_more(meta: dict) -> dict:
    extra = {**meta["history"][-1], "epoch": 3, "step": 66}
    return _with(meta, "history", [*meta["history"], extra])


@pytest.mark.parametrize(
    "change, needle",
    [
        (_dropped, "its history holds 1 epoch record, but its epoch is 2"),
        (_one_more, "its history holds 3 epoch records, but its epoch is 2"),
        (lambda m: _with(m, "epoch", 3), "its history holds 2 epoch records, but its epoch is 3"),
        (_swapped, "its history record 0 is of epoch 2, not 1"),
        (lambda m: _with(m, "step", 45), "its step is 45, but its last epoch ended at step 44"),
        (lambda m: _with(m, "history.1.step", 22), "record 1 is at step 22, not after step 22"),
        (lambda m: _with(m, "history.0.step", 99), "record 0 is at step 99, not after step 0 and"),
        (lambda m: _with(m, "history.1.threads", 0), "its history record 1 has 0 threads"),
        (lambda m: _with(m, "history.0.kernels", 7), "record 0 has kernels 7, not 0 or 1"),
        (lambda m: _with(m, "image_shape", [3, 5]), "'image_shape' is [3, 5], not (H, W) of 64"),
        (lambda m: _with(m, "image_shape", [-8, -8]), "'image_shape' is [-8, -8], not (H, W)"),
        (lambda m: _with(m, "data_fingerprint", {"shape": [1]}), "'data_fingerprint' is not a"),
        (lambda m: _with(m, "data_fingerprint.blake2b", "x" * 32), "'data_fingerprint' is not"),
    ],
)
def test_a_checkpoint_whose_progress_disagrees_is_damaged(run_dir, tmp_path, change, needle):
    # the epoch, the step count and the per-epoch history were each trusted alone: a history
    # of one epoch in a checkpoint of two resumed and wrote metrics.jsonl without epoch 1
    out = _crafted(run_dir, tmp_path, change(_meta(run_dir)))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(out)
    message = str(info.value)
    assert message.startswith(f"{out / 'checkpoint.npz'} is damaged: ") and "\n" not in message
    assert needle in message and message.endswith("; use another checkpoint or train again")


def test_a_checkpoint_without_history_loads_but_does_not_resume(run_dir, tmp_path):
    # save_checkpoint(path, model, epoch=2) with no history: a model saved by hand is looked at
    # as before; resuming it would write metrics.jsonl without its first epochs
    out = _crafted(run_dir, tmp_path, _with(_meta(run_dir), "history", []))
    model, ckpt = load_model(out)
    assert ckpt.epoch == 2 and ckpt.history == []
    config = TrainConfig.from_dict(ckpt.train_config, out_dir=str(out), epochs=3)
    with pytest.raises(CheckpointError, match="it records no history of its 2 epochs"):
        Trainer(model, load_dataset("digits"), config).fit(resume=True)
    assert (out / "metrics.jsonl").read_bytes() == (run_dir / "metrics.jsonl").read_bytes()


def test_a_validating_run_whose_history_lacks_a_validation_loss_does_not_resume(run_dir, tmp_path):
    # the best epoch and early stopping's patience come from the val_loss records: a crafted
    # history without them turned early stopping off without a word
    last = len(_meta(run_dir)["history"]) - 1
    meta = _with(_meta(run_dir), f"history.{last}.val_loss", None, delete=True)
    assert meta["train_config"]["val_fraction"] > 0
    out = _crafted(run_dir, tmp_path, meta)
    model, ckpt = load_model(out)  # looked at as before
    config = TrainConfig.from_dict(ckpt.train_config, out_dir=str(out), epochs=3)
    with pytest.raises(CheckpointError, match="its last epoch, 2, has no validation loss, though"):
        Trainer(model, load_dataset("digits"), config).fit(resume=True)


def test_a_run_that_began_validating_on_a_resume_resumes_again(tmp_path):
    # its first epochs have no validation loss (val_fraction was 0 then): not damaged
    def run(epochs: int, val_fraction: float, **allow) -> None:
        config = TrainConfig(epochs=epochs, batch_size=500, val_fraction=val_fraction,
                             progress=False, out_dir=str(tmp_path))  # fmt: skip
        model = VAE(64, hidden=[8], latent=2, backend=Backend(seed=0))
        Trainer(model, load_dataset("digits"), config).fit(resume=epochs > 1, **allow)

    run(1, 0.0)
    run(2, 0.25, allow_changes=("val_fraction",))
    run(3, 0.25)
    assert [("val_loss" in r) for r in load_checkpoint(tmp_path).history] == [False, True, True]


# ------------------------------------------------------------------ resume with other flags
def test_resume_accepts_the_run_s_own_flags_and_takes_the_rest_from_it(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path)
    same = ["--hidden", "32", "--latent", "2", "--data", "Digits", "--model", "vae", "--lr", "1e-3"]
    assert main(["train", "--out", str(out), *RESUME, *same]) == 0
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == 3 and ckpt.model_config["hidden"] == [32]
    assert ckpt.train_config["data"] == "digits" and ckpt.train_config["batch_size"] == 64


def test_resume_names_every_differing_flag_in_process(run_dir, tmp_path, capsys):
    out = _crafted(run_dir, tmp_path)
    flags = ["--latent", "3", "--lr", "0.01", "--seed", "7", "--dtype", "float64", "--beta", "2"]
    assert main(["train", "--out", str(out), *RESUME, *flags]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "with --latent 2 --beta 1.0 --lr 0.001 --seed 0 --dtype float32;" in line
    assert "asked for --latent 3 --beta 2.0 --lr 0.01 --seed 7 --dtype float64;" in line


# ------------------------------------------------------------------ two trainings, one folder
def test_a_second_training_in_a_locked_folder_is_refused(run_dir, tmp_path):
    """Two trainings with the same --out both "succeeded"; now the second is refused, and
    leaves the holder's files alone (its temporary files included)."""
    out = _crafted(run_dir, tmp_path)
    stale = out / ".checkpoint.npz.abcd1234.tmp"
    stale.write_bytes(b"half a checkpoint")
    before = (out / "checkpoint.npz").read_bytes()
    calls = {
        "resume": ["train", "--out", str(out), *RESUME],
        "fresh": ["train", "--out", str(out), *T, "--force"],  # --force: past the run it holds
    }
    with folder_lock(out):
        results = _cli_batch(calls)
        assert stale.exists()  # not ours to clean while another process holds the folder
    for result in results.values():
        _refused_unchanged(out, result, before, f"{out} is in use by process {os.getpid()}")


def _wait_for_holder(lock: Path, holder: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not (lock.exists() and lock.read_text().strip() == str(holder.pid)):
        assert time.monotonic() < deadline and holder.poll() is None, "it never took the lock"
        time.sleep(0.05)


def _one_more_epoch(out: Path) -> list[str]:
    """RESUME with ``--epochs`` one past the epochs the run in ``out`` has done."""
    return [*RESUME[:2], str(_meta(out)["epoch"] + 1), *RESUME[3:]]


def test_two_trainings_at_once_and_a_killed_holder(run_dir, tmp_path, capsys):
    """The first training holds the folder while it runs; killed with SIGKILL, it lets go.
    (It is stopped once it holds the lock: without Numba to compile first it had trained past
    RESUME's 3 epochs by then, and the second training was refused for its --epochs.)"""
    out = _crafted(run_dir, tmp_path)
    long_run = ["train", "--out", str(out), "--resume", "--epochs", "5000", "--no-progress"]
    first = subprocess.Popen(
        [sys.executable, "-c", MAIN, *long_run, "--no-figures"],
        env={**os.environ, "SCRATCHVAE_KERNELS": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_holder(out / ".lock", first)
        first.send_signal(signal.SIGSTOP)  # it keeps the lock and trains no further
        assert main(["train", "--out", str(out), *_one_more_epoch(out)]) == 2
        line = capsys.readouterr().err.strip().splitlines()[-1]
        assert line.startswith("scratchvae: error: ") and f"in use by process {first.pid}" in line
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    with folder_lock(out):  # the operating system dropped the killed holder's lock
        pass
    assert main(["train", "--out", str(out), *_one_more_epoch(out)]) == 0


def test_fit_refuses_a_locked_folder_before_writing(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path)
    before = (out / "checkpoint.npz").read_bytes()
    model, ckpt = load_model(out)
    config = TrainConfig.from_dict(ckpt.train_config, out_dir=str(out), epochs=4)
    trainer = Trainer(model, load_dataset("digits", "train"), config)
    with folder_lock(out), pytest.raises(FolderLocked, match="in use by process"):
        trainer.fit(resume=True)
    assert (out / "checkpoint.npz").read_bytes() == before
    assert len(trainer.fit(resume=True)) == 4  # free again


def _pid_file_lock(folder):
    """The folder's lock is the pid file: it names this process while held, refuses a second
    holder in one line, and is gone after; returns its path."""
    with folder_lock(folder) as lock:
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(FolderLocked, match=f"in use by process {os.getpid()}"):
            with folder_lock(folder):
                pass
    assert not lock.exists()
    return lock


def test_without_fcntl_the_lock_is_a_pid_file(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic, "fcntl", None)
    lock = _pid_file_lock(tmp_path)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True
    )
    lock.write_text(dead.stdout.decode())  # left by a process that no longer runs: stale
    with folder_lock(tmp_path):
        assert lock.read_text().strip() == str(os.getpid())


def test_a_file_system_without_flock_falls_back_to_the_pid_file(tmp_path, monkeypatch):
    """Some network file systems refuse flock (ENOLCK): the lock is then the pid file, as
    without fcntl, and the empty lock file the flock attempt created is not mistaken for a
    holder."""
    import fcntl

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(atomic, "fcntl", SimpleNamespace(flock=no_flock, LOCK_EX=fcntl.LOCK_EX,
                                                         LOCK_NB=fcntl.LOCK_NB))  # fmt: skip
    _pid_file_lock(tmp_path)
    with pytest.raises(ValueError, match="atomic_write mode must be 'wb' or 'w', got 'a'"):
        with atomic_write(tmp_path / "x.txt", "a"):
            pass


# ------------------------------------------------------------------ stale temporary files
def test_a_training_start_removes_the_temporary_files_a_killed_run_left(run_dir, tmp_path):
    out = _crafted(run_dir, tmp_path)
    ours = [out / ".checkpoint.npz.k1ll3d00.tmp", out / ".metrics.jsonl.x9y8z7w6.tmp"]
    others = [out / ".notes.txt.abcdefgh.tmp", out / "keep.tmp", out / ".checkpoint.npz.bak"]
    for p in ours + others:
        p.write_bytes(b"x")
    assert main(["train", "--out", str(out), *RESUME]) == 0
    assert [p for p in ours if p.exists()] == []
    assert all(p.exists() for p in others)
