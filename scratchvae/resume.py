"""What ``scratchvae train --resume`` accepts on its command line.

A resumed run continues as it was trained: its model, data and settings come from the
checkpoint, and a flag given on the command line whose value differs from the run's is refused
with one line naming each such flag (it used to be ignored, or for ``--data``, to train the
run's model on other data while the checkpoint still named the old). A flag is "given" when it
was typed (``args.typed``, set by :func:`scratchvae.cli.main` from
:func:`~scratchvae.cliargs.typed_options`), even at the parser's default: ``--lr 0.001`` on a
run trained with ``--lr 0.01`` is refused. Without ``args.typed`` (a Namespace built in code) a
flag is given when its value differs from the default. ``--epochs`` may raise the target,
``--backend`` and ``--data-dir`` say where to run and where the data lives now, and
``--save-every`` how often it saves from now on (none of them changes the run's numbers).

:func:`check_same_run` is the library's side of the same rule: ``fit(..., resume=True)`` with a
:class:`~scratchvae.train.TrainConfig` whose batch size, learning rate, seed, ... differ from
the run's is refused (it used to continue with them, no longer the run it resumed). Both sides
resume only on the data the run was trained on (:func:`check_same_data`: its fingerprint, when
its checkpoint records one) and from a checkpoint whose progress agrees with itself and with
that data (:func:`check_progress_fits`). A resume on another CPU thread count than the run's
last epoch goes on with a :class:`ResumeWarning` (:func:`warn_other_threads`).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from .checkpoint import Checkpoint
from .checkpoint_checks import OPTIONAL_SETTINGS
from .checkpoint_file import damaged
from .data import named_dataset
from .fingerprint import how_data_differs
from .history import History

if TYPE_CHECKING:  # train imports this module
    from .train import TrainConfig

__all__ = [
    "RUN_SETTINGS",
    "ResumeMismatch",
    "ResumeWarning",
    "check_flags_apply",
    "check_progress_fits",
    "check_resume_flags",
    "check_same_data",
    "check_same_run",
    "data_moved",
    "nothing_to_train",
    "resume_data",
    "same_data",
    "warn_other_backend",
    "warn_other_kernels",
    "warn_other_threads",
]


class ResumeMismatch(ValueError):
    """A --resume command line that asks for other settings than the run has (one line)."""


class ResumeWarning(UserWarning):
    """A resumed run goes on, but not exactly as a run that never stopped (one line; the
    command line prints it as ``scratchvae: ...`` on stderr)."""


# What --resume compares with the checkpoint: flag -> (where the run keeps it, its key there).
# "model": the model config of any kind; "vae", "dae", "sae": only a model of that kind;
# "train": the train config; "backend": the backend meta. Flags not listed here either may
# change on resume (--epochs, --backend, --data-dir, --no-progress, --no-figures) or do not
# concern the run.
_RESUME_FLAGS = {
    "--model": ("model", "model"),
    "--hidden": ("model", "hidden"),
    "--latent": ("model", "latent"),
    "--activation": ("model", "activation"),
    "--likelihood": ("model", "likelihood"),
    "--decoder-std": ("model", "decoder_std"),
    "--init": ("model", "init"),
    "--beta": ("vae", "beta"),
    "--objective": ("vae", "objective"),
    "--k-train": ("vae", "k"),
    "--estimator": ("vae", "estimator"),
    "--noise": ("dae", "noise"),
    "--noise-level": ("dae", "noise_level"),
    "--rho": ("sae", "rho"),
    "--sparsity-weight": ("sae", "beta"),
    "--data": ("train", "data"),
    "--batch-size": ("train", "batch_size"),
    "--lr": ("train", "lr"),
    "--optimizer": ("train", "optimizer"),
    "--momentum": ("train", "momentum"),
    "--warmup-epochs": ("train", "warmup_epochs"),
    "--clip-norm": ("train", "clip_norm"),
    "--patience": ("train", "patience"),
    "--val-fraction": ("train", "val_fraction"),
    "--binarize": ("train", "binarize"),
    "--seed": ("train", "seed"),
    "--dtype": ("backend", "dtype"),
}


_KINDS = ("vae", "dae", "sae")  # the model kinds with flags of their own


def _flag_text(flag: str, value: Any) -> str:
    shown = " ".join(map(str, value)) if isinstance(value, list) else value
    return f"{flag} {'none' if shown is None else shown}"


def same_data(saved: str | None, asked: str) -> bool:
    """A named data set in any case; a file or folder wherever it is written from."""
    if saved is None:  # a run made by the library, which did not record its data
        return True
    key_saved, key_asked = named_dataset(saved), named_dataset(asked)
    if key_saved or key_asked:
        return key_saved == key_asked
    return Path(saved).expanduser().resolve() == Path(asked).expanduser().resolve()


def data_moved(ckpt: Checkpoint, asked: str | None) -> bool:
    """Whether ``--data`` (``asked``) names a file or folder other than the one the run
    records, for a run that records its data's fingerprint: taken as the run's data moved, the
    fingerprint (:func:`check_same_data`, when the run resumes) then says whether it is the same
    data. A checkpoint written before fingerprints has its path only: that must agree."""
    saved = ckpt.train_config.get("data")
    if asked is None or saved is None or ckpt.data_fingerprint is None:
        return False
    return not (named_dataset(saved) or named_dataset(asked) or same_data(saved, asked))


def check_resume_flags(args: argparse.Namespace, ckpt: Checkpoint, config: TrainConfig) -> None:
    """Refuse (:class:`ResumeMismatch`, one line naming each flag) the flags given on a
    resume command line whose values differ from the run's (``config``: its train config)."""
    from .cli import build_parser  # noqa: PLC0415 - cli imports this module

    typed = getattr(args, "typed", None)  # the options typed on the command line
    # without them (a Namespace built in code): a flag at its parser default was not given
    defaults = vars(build_parser().parse_args(["train"])) if typed is None else {}
    kind = ckpt.model_config["model"]
    saved_values = {
        "model": ckpt.model_config,
        kind: {**OPTIONAL_SETTINGS, **ckpt.model_config},
        "train": config.to_dict(),
        "backend": {"dtype": "float32", **ckpt.backend},
    }
    was, asked = [], []
    for flag, (where, key) in _RESUME_FLAGS.items():
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest, None)
        given = dest in typed if typed is not None else value != defaults.get(dest)
        if where in _KINDS and where != kind and given:  # used to be ignored without a word
            raise ResumeMismatch(
                f"{flag} applies to --model {where} only, and {ckpt.path} holds a {kind}; "
                "drop it to resume"
            )
        if where not in saved_values or value is None or not given:
            continue
        option, needed = _ONLY_FOR.get(flag, (None, None))  # --decoder-std, --momentum
        run_has = _run_setting(ckpt, config, option) if option else needed
        if run_has != needed:  # the run has no such setting: say so, not "trained with 1.0"
            raise ResumeMismatch(
                f"{flag} applies to {option} {needed} only, and {ckpt.path} was trained with "
                f"{option} {run_has}; drop it to resume"
            )
        saved = saved_values[where].get(key)
        same = same_data(saved, value) if flag == "--data" else saved == value
        if not same:
            was.append(_flag_text(flag, saved))
            asked.append(_flag_text(flag, value))
    if was:
        raise ResumeMismatch(
            f"{ckpt.path} was trained with {' '.join(was)}; you asked for {' '.join(asked)}; "
            "drop those flags to resume, or use another --out"
        )


def _run_setting(ckpt: Checkpoint, config: TrainConfig, option: str) -> Any:
    """The run's value of ``option`` (--likelihood, --optimizer, --model) from its checkpoint."""
    if option == "--optimizer":
        return config.optimizer
    return ckpt.model_config.get(option[2:])


def resume_data(given: str | None, recorded: str | None, run: Path, held_out: bool = False) -> str:
    """The data a run's model is trained on again or evaluated on: ``--data`` (``given``;
    checked against the run's by :func:`check_resume_flags` on resume), else the data the run
    recorded. A run made by ``fit`` records none, so without ``--data`` it is refused (it used
    to go on with the digits, or be evaluated on them, without a word). A recorded file no
    longer there is named (``held_out``: the test split is wanted: held-out data first)."""
    data = given or recorded
    if data is None:
        raise ResumeMismatch(
            f"the run in {run} does not record its data (it was trained by fit(), not "
            "scratchvae train); pass --data with the data it was trained on"
        )
    if given is None and named_dataset(data) is None and not os.path.lexists(data):
        where = "held-out data, or with where it is now" if held_out else "where it is now"
        raise ResumeMismatch(  # (it was "unknown data set ... choose digits, mnist, ...")
            f"the run in {run} was trained on {data}, which is no longer there; pass --data "
            f"with {where}"
        )
    return data


def nothing_to_train(ckpt: Checkpoint, config: TrainConfig) -> str | None:
    """Why the run in ``ckpt`` has no epoch left to train under ``config`` (a phrase), or
    None. Refused (:class:`ResumeMismatch`): an --epochs below the epochs it has done."""
    done, p = ckpt.epoch, config.patience
    if config.epochs < done:
        raise ResumeMismatch(
            f"--epochs {config.epochs} is below the {done} epochs the run has done; "
            "pass a larger --epochs to continue it"
        )
    if History(list(ckpt.history)).out_of_patience(p):
        return f"it stopped early at epoch {done} (--patience {p})"
    return (
        f"it has done its {done} epochs; a larger --epochs continues it"
        if done == config.epochs
        else None
    )


# The TrainConfig fields a resumed run keeps: each changes its numbers (the split, the batches,
# the noise, the updates) or when it stops. The others may change: epochs (raised), where the
# run and its data are (out_dir, data_dir), how often it saves and reports, the progress shown.
RUN_SETTINGS = ("batch_size", "lr", "optimizer", "momentum", "warmup_epochs", "clip_norm",
                "binarize", "val_fraction", "patience", "seed")  # fmt: skip


def check_same_run(ckpt: Checkpoint, config: TrainConfig, allow: Sequence[str] = ()) -> None:
    """Refuse (:class:`ResumeMismatch`, one line naming each setting) to resume the run in
    ``ckpt`` under a ``config`` whose :data:`RUN_SETTINGS` differ from the run's, except those
    named in ``allow`` (a setting the file does not record is not compared), or whose epochs
    are fewer than the run has done."""
    unknown = sorted(set(allow) - set(RUN_SETTINGS))
    if unknown:
        raise ValueError(f"allow_changes: {unknown[0]!r} is none of {', '.join(RUN_SETTINGS)}")
    saved, now = ckpt.train_config, config.to_dict()
    differ = [k for k in RUN_SETTINGS if k in saved and saved[k] != now[k] and k not in allow]
    if differ:
        was = ", ".join(f"{k}={saved[k]!r}" for k in differ)
        asked = ", ".join(f"{k}={now[k]!r}" for k in differ)
        raise ResumeMismatch(
            f"{ckpt.path} was trained with {was}; this TrainConfig has {asked}; resume with the "
            "run's own settings (load_checkpoint(out_dir).train_config), name the change in "
            "allow_changes, or use another out_dir"
        )
    if config.epochs < ckpt.epoch:
        raise ResumeMismatch(
            f"epochs={config.epochs} is below the {ckpt.epoch} epochs the run in {ckpt.path} "
            "has done; pass a larger epochs to continue it"
        )


# flags that only some runs use: flag -> (the option that must have this value, the value)
_ONLY_FOR = {
    "--momentum": ("--optimizer", "sgd"),
    "--warmup-epochs": ("--model", "vae"),
    "--decoder-std": ("--likelihood", "gaussian"),
}


def check_flags_apply(args: argparse.Namespace) -> None:
    """Refuse (ValueError, one line) a flag typed for another model kind (--rho on a VAE) or
    optimizer (--momentum with adam): it would be silently ignored."""
    typed = getattr(args, "typed", None) or set()
    only = {f: ("--model", w) for f, (w, _) in _RESUME_FLAGS.items() if w in _KINDS}
    for flag, (option, value) in {**only, **_ONLY_FOR}.items():
        if flag[2:].replace("-", "_") in typed and getattr(args, option[2:]) != value:
            raise ValueError(
                f"{flag} applies to {option} {value} only; drop it, or pass {option} {value}"
            )


# ------------------------------------------------------------------ the run's data and progress
def check_same_data(ckpt: Checkpoint, fingerprint: Callable[[], dict[str, Any]]) -> None:
    """Refuse (:class:`ResumeMismatch`, one line) to resume the run in ``ckpt`` on data whose
    ``fingerprint()`` (:func:`scratchvae.fingerprint.data_fingerprint`, computed only when
    needed) is not the one it records. A checkpoint written before data was fingerprinted
    records none: it resumes as before, on whatever data it is given."""
    if ckpt.data_fingerprint is None:
        return
    differs = how_data_differs(ckpt.data_fingerprint, fingerprint())
    if differs:
        raise ResumeMismatch(
            f"{ckpt.path} was trained on other data ({differs}); resume it on the data it was "
            "trained on, or start a new run in another out_dir (--out DIR)"
        )


def check_progress_fits(ckpt: Checkpoint, steps_per_epoch: int, allow: Sequence[str]) -> None:
    """Refuse (CheckpointError, one line: the file is damaged) a checkpoint whose progress a
    resume cannot continue: epochs done with no history of them (a resume would write
    metrics.jsonl without them), an epoch with no validation loss in a run that validates
    (early stopping would restart its count without a word), an optimizer step count other
    than the run's (Adam's bias correction and the KL warm-up would disagree), or, on the data
    it was trained on (its fingerprint matched) with the same batch size and split, a last
    epoch of another number of steps than the data gives."""
    t, history = ckpt.optim_state.get("t"), ckpt.history
    steps = [r.get("step") for r in history[-2:]]
    if None in steps or not steps:
        last = None
    else:  # the last epoch's steps (mypy: None is ruled out above)
        last = steps[-1] - (steps[0] if len(steps) == 2 else 0)  # type: ignore[operator]
    why = None
    # the count of early stopping goes on from the last epoch's validation loss (earlier epochs
    # may lack one: a run resumed with allow_changes=("val_fraction",) from val_fraction 0)
    last_unscored = bool(history) and "val_loss" not in history[-1]
    if ckpt.epoch and not history:
        why = f"it records no history of its {ckpt.epoch} epochs"
    elif last_unscored and ckpt.train_config.get("val_fraction") and "val_fraction" not in allow:
        # the best epoch and early stopping's patience are read from them
        why = f"its last epoch, {ckpt.epoch}, has no validation loss, though the run holds rows out"
    elif t is not None and t.ndim == 0 and t.dtype.kind in "iu" and 0 <= t != ckpt.step:
        why = f"its optimizer state is at step {int(t)}, but the run at step {ckpt.step}"
    elif (
        ckpt.data_fingerprint is not None
        and not {"batch_size", "val_fraction"} & set(allow)
        and last not in (None, steps_per_epoch)
    ):
        gives = f"its data and batch size give {steps_per_epoch}"
        why = f"its last epoch took {last} steps, where {gives}"
    if why:
        raise damaged(ckpt.path, f"{why} (not as scratchvae writes a checkpoint)")


def _users_level() -> int:
    """The ``stacklevel`` of the first caller outside this package (the user's ``fit(...)`` or
    ``Trainer.fit(...)`` line), for a warning raised by the function that calls this one."""
    # level 1: the warning function, 2: its caller (frame 2 from here), ...
    frame: FrameType | None = sys._getframe(2)
    level, package = 2, str(Path(__file__).parent) + os.sep
    while frame is not None and frame.f_code.co_filename.startswith(package):
        frame, level = frame.f_back, level + 1
    return level


def warn_other_threads(ckpt: Checkpoint, threads: int) -> None:
    """Warn (:class:`ResumeWarning`) when the resumed run goes on with another number of CPU
    threads than its last epoch used: BLAS sums in another order, the batch is split another
    way, so its numbers differ in the last bits from those of a run that never stopped."""
    ran = ckpt.history[-1].get("threads") if ckpt.history else None
    if ran is None or ran == threads:
        return
    warnings.warn(
        f"the run in {ckpt.path.parent} continues on {threads} CPU thread"
        f"{'s' * (threads != 1)} where its last epoch ran on {ran}, so its numbers will differ "
        f"in the last bits from a run that never stopped; SCRATCHVAE_THREADS={ran} reproduces "
        "them",
        ResumeWarning,
        stacklevel=_users_level(),
    )


def warn_other_kernels(ckpt: Checkpoint, on: bool) -> None:
    """Warn (:class:`ResumeWarning`) when the resumed run goes on with the compiled kernels on
    where its last epoch ran with the ops' bodies, or the other way round (Numba missing,
    ``SCRATCHVAE_KERNELS=0``): they round differently in the last bits, so its numbers
    differ from those of a run that never stopped. A run that records nothing: no word."""
    ran = ckpt.history[-1].get("kernels") if ckpt.history else None
    if ran is None or bool(ran) == on:
        return
    now, before = ("on", "off") if on else ("off", "on")
    how = (
        "SCRATCHVAE_KERNELS=0"
        if on
        else "the kernels on (Numba installed, SCRATCHVAE_KERNELS unset)"
    )
    warnings.warn(
        f"the run in {ckpt.path.parent} continues with the compiled kernels {now} where its "
        f"last epoch ran with them {before}, so its numbers will differ in the last bits from "
        f"a run that never stopped; {how} reproduces them",
        ResumeWarning,
        stacklevel=_users_level(),
    )


def warn_other_backend(ckpt: Checkpoint, name: str) -> None:
    """Warn (:class:`ResumeWarning`) when a run trained on one backend is resumed on another
    (NumPy on CuPy: ``--backend`` may change): NumPy's generator does not continue on CuPy (its
    generator starts again from the seed and the epochs done), and the arithmetic differs.
    A checkpoint that does not name its backend is told by its generator state's kind."""
    ran = ckpt.backend.get("name") or ("numpy" if "bit_generator" in ckpt.rng_state else "cupy")
    if ran == name:
        return
    warnings.warn(
        f"the run in {ckpt.path.parent} was trained on {ran} and continues on {name}: another "
        "generator and other arithmetic, so its numbers will differ from a run that never "
        f"stopped; --backend {ran} reproduces them",
        ResumeWarning,
        stacklevel=_users_level(),
    )
