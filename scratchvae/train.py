"""The training loop: shuffled minibatches, one hand-written forward/backward per step, Adam/SGD.

One step, for a batch of row indices ``idx`` drawn from the backend's seeded permutation::

    x      = binarize(backend.asarray(data.get_batch(idx)))      (B, D) on the device
    noise  = model.draw_noise(B)                                 eps, masks: from backend.rng
    terms, grads = model.loss_and_grads(x, noise, kl_weight=w)   forward + backward; w ramps
                                                                 0 -> beta (warm-up)
    opt.step(model.params, grads)                                in place, on the flat buffer
    accumulate(sums[k], terms[k], B)                             the epoch's sums, on the device

On a GPU the training set is uploaded once when it fits (each batch gathered there) and the
step after the gather is replayed as one CUDA graph (``backend.step_graph``; the first steps,
and those whose KL weight still changes, run uncaptured). Epoch sums of the loss terms stay on
the device; the host reads them every ``log_every`` steps (for the progress bar and the
divergence check) and at the end of the epoch. Progress is one line per epoch, and a bar in a
terminal (:mod:`scratchvae.progress`). Every random draw comes from
``model.backend.rng`` in a fixed order, and a checkpoint stores that generator's state at the
epoch boundary, so a resumed run equals an uninterrupted one bit for bit (NumPy, with the same
CPU thread counts: ``backend/threads.py``, and a resume on another count than the run's last
epoch says so with a ``ResumeWarning``, as one with the compiled kernels switched does;
CuPy's counter-based generator is restored exactly too). Validation uses its own generator,
reseeded every epoch (the same eps every epoch).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from .atomic import folder_lock
from .backend import Backend, compiled_kernels, cpu_threads, op, to_numpy, training_threads
from .checkpoint import CHECKPOINT_NAME, load_checkpoint, restore_training, save_checkpoint
from .data import Dataset, as_dataset, binarize, check_n_features, train_val_split
from .fingerprint import data_fingerprint
from .history import METRICS_NAME, History, write_metrics
from .inputs import require as _check
from .models import AE
from .optim import Optimizer
from .progress import Progress, epoch_line, postfix, quiet_float_warnings
from .resume import (
    check_progress_fits,
    check_same_data,
    check_same_run,
    warn_other_backend,
    warn_other_kernels,
    warn_other_threads,
)
from .train_config import TrainConfig, kl_weight_at

__all__ = ["History", "TrainConfig", "Trainer", "TrainingDiverged", "fit", "write_metrics"]
# History and write_metrics live in history.py, TrainConfig in train_config.py: re-exported
# here, where users import them

_VAL_SEED_OFFSET = 1_000_003  # the validation generator's seed is config.seed + this


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite (a one-line message naming the epoch and step)."""


class Trainer:
    """Trains ``model`` on ``data`` as ``config`` says. ``fit()`` runs (or resumes) it."""

    def __init__(self, model: AE, data: Dataset | Any, config: TrainConfig) -> None:
        data = as_dataset(data, model.lik.kind)  # an array: checked as dataset_from_array does
        check_n_features(data, model.n_features, "the model")
        self.model, self.data, self.config = model, data, config
        self.bk: Backend = model.backend
        self.train_idx, self.val_idx = train_val_split(data.n, config.val_fraction, config.seed)
        self.steps_per_epoch = math.ceil(len(self.train_idx) / config.batch_size)
        self.optimizer = self._build_optimizer()
        self.history = History()
        self.step = 0  # optimizer steps taken so far, over all epochs
        self._host_batches: dict[int, Any] = {}  # rows -> float32 (rows, D) host buffer
        self._device_batches: dict[int, Any] = {}  # rows -> (rows, D) device buffer
        self._sums: dict[str, Any] = {}  # the epoch's sums of the loss terms, on the device
        # the training set on the device when the backend has one and it fits: uploaded once,
        # each batch gathered there (None: batches copied from the host)
        n_bytes = len(self.train_idx) * data.n_features * self.bk.dtype.itemsize
        self._resident = None
        if self.bk.fits_on_device(n_bytes):
            self._resident = self.bk.asarray(data.get_batch(self.train_idx))
        # one step: on a GPU replayed as a CUDA graph (kernels/graph.py), else _step itself
        self.step_runner = self.bk.step_graph(self._step)
        self._said_fallback = False
        self._first_epoch: int | None = None  # the first epoch this fit() runs
        self._fingerprint: dict[str, Any] | None = None  # the data's, once per fit()
        self._ckpt: Any = None  # the checkpoint the last resume started from

    def _build_optimizer(self) -> Optimizer:
        return self.config.make_optimizer()

    # ------------------------------------------------------------------ the loop
    def fit(
        self, resume: bool = False, replace: bool = False, allow_changes: Sequence[str] = ()
    ) -> History:
        """Train until ``config.epochs`` (or early stopping). ``resume``: continue from the
        checkpoint in ``config.out_dir``, bit for bit as if never interrupted (NumPy), with the
        run's settings: a ``config`` whose batch size, lr, seed, ... differ is refused, except
        those named in ``allow_changes`` (``("lr",)``: a learning-rate schedule; see
        :func:`~scratchvae.resume.check_same_run`). A new run refuses a folder holding one (or
        its metrics) unless ``replace`` (then deleted). The folder stays locked meanwhile
        (:func:`~scratchvae.atomic.folder_lock`)."""
        _check(not (resume and replace), "resume=True continues a run, replace=True deletes it")
        if self.bk.name == "numpy":
            cpu_threads()  # a bad SCRATCHVAE_THREADS: refused before a replaced run is deleted
        out, run_files = self.config.out_dir, [CHECKPOINT_NAME, METRICS_NAME]
        with nullcontext() if out is None else folder_lock(out, run_files):
            kept = [] if resume or out is None else run_files
            # (mypy: out may be None; kept, and so held, are [] then)
            held = [name for name in kept if (Path(out) / name).exists()]  # type: ignore[arg-type]
            how = "resume=True continues it, " if CHECKPOINT_NAME in held else ""  # else no run
            _check(
                replace or not held,
                f"{out} holds a run ({', '.join(held)}): {how}replace=True deletes it and starts "
                "over, or choose another out_dir",
            )
            for name in held:
                # a new run: not beside an old one's
                (Path(out) / name).unlink(missing_ok=True)  # type: ignore[arg-type]
            with training_threads(self.bk.name == "numpy") as self._threads:
                return self._fit(resume, allow_changes)

    def _fit(self, resume: bool, allow_changes: Sequence[str]) -> History:
        self._first_epoch, self._fingerprint = None, None
        self._warmup_since = 1  # the first epoch of config.warmup_epochs' schedule (saved)
        if not resume and (self.step or len(self.history)):  # a new run on a used Trainer: its
            self.history, self.step = History(), 0  # epochs from 1 again, not after the old ones
            self.optimizer.load_state_dict({"t": 0})
        start = self._resume(allow_changes) if resume else 0
        if start and self.history.out_of_patience(self.config.patience):  # stays stopped
            self.history.stopped_early = True
            return self.history
        c, n = self.config, len(self.train_idx)
        if resume and start < c.epochs:
            warn_other_backend(self._ckpt, self.bk.name)  # another generator
        if resume and start < c.epochs and self.bk.name == "numpy":
            warn_other_threads(self._ckpt, self._threads.count)  # another sum order
            warn_other_kernels(self._ckpt, compiled_kernels())  # another rounding
        bar = Progress(
            (c.epochs - start) * n,
            bar=c.progress and c.progress_bar,
            bar_format="{desc} {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}{postfix}]",
        )
        every = max(1, c.epochs // 10) if bar.shows_bar else 1  # epochs between summary lines
        try:
            for epoch in range(start + 1, c.epochs + 1):
                bar.describe(f"epoch {epoch}/{c.epochs}")
                if (news := self._threads.news()) and c.progress:
                    bar.line(news)  # fewer threads than cores: others are busy
                self.history.records.append(self._run_epoch(epoch, bar))
                stop = self.history.out_of_patience(self.config.patience)
                self._save(epoch, last=stop or epoch == c.epochs)
                if c.progress and (epoch % every == 0 or stop or epoch == c.epochs):
                    record = self.history.records[-1]
                    bar.line(epoch_line(record, c.epochs, self._warmup_of(record)))
                if stop:
                    self.history.stopped_early = True
                    break
        finally:
            bar.close()
        return self.history

    @quiet_float_warnings
    def _run_epoch(self, epoch: int, bar: Progress) -> dict[str, Any]:
        self._first_epoch = self._first_epoch or epoch
        t0 = time.perf_counter()
        train = self._train_epoch(epoch, bar)
        seconds_train = time.perf_counter() - t0
        # the last step's update, which no loss has seen yet (a checkpoint refuses it)
        if not self.bk.is_finite(self.model.params.flat):
            raise self._diverged(epoch, "the parameters")
        if not all(self.bk.is_finite(v) for v in self.optimizer.state.values()):
            raise self._diverged(epoch, "the optimizer state")
        record: dict[str, Any] = {"epoch": epoch, "step": self.step}
        record.update({f"train_{k}": v for k, v in train.items()})
        if len(self.val_idx):
            record.update({f"val_{k}": v for k, v in self.validate().items()})
            if not math.isfinite(record["val_loss"]):
                raise self._diverged(epoch, "the validation loss")
        if self.model.kl_beta is not None:
            record["kl_weight"] = self.kl_weight(self.step - 1)
        record["seconds"] = time.perf_counter() - t0
        record["samples_per_s"] = len(self.train_idx) / max(seconds_train, 1e-9)
        if self.bk.name == "numpy":  # the step's numbers depend on it (backend/threads.py)
            record["threads"] = self._threads.count
            record["kernels"] = int(compiled_kernels())  # 1: Numba's kernels, 0: the bodies
            if self._threads.probe:  # chosen from the free cores: again, for the next epoch
                self._threads.update()
        return record

    def _train_epoch(self, epoch: int, bar: Progress) -> dict[str, float]:
        """One pass over the shuffled training part; returns the epoch's mean terms (host)."""
        c, n = self.config, len(self.train_idx)
        perm = self.bk.permutation(n)  # seeded
        order = perm if self._resident is not None else self.train_idx[to_numpy(perm)]
        for v in self._sums.values():
            v[...] = 0  # in place: a captured step keeps adding into the same arrays
        seen, t0 = 0, time.perf_counter()
        for i, start in enumerate(range(0, n, c.batch_size)):
            idx = order[start : start + c.batch_size]
            self.step_runner(self._batch(idx, self.bk), self.kl_weight(self.step))
            self.step += 1
            seen += len(idx)
            bar.update(len(idx))
            if (i + 1) % c.log_every == 0 or start + c.batch_size >= n:
                means = self._host_means(self._sums, seen, epoch)  # a sync every log_every
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.postfix(postfix(means, rate))
        reason = getattr(self.step_runner, "fallback_reason", None)
        if reason and not self._said_fallback:
            self._said_fallback = True
            bar.line(f"scratchvae: the training step runs without a CUDA graph ({reason})")
        return means

    def _step(self, x: Any, kl_weight: float) -> None:
        """:meth:`train_step`, then the batch's terms added to the epoch's sums: all of it on
        the device, no host sync (on a GPU this is what is captured and replayed)."""
        terms = self.train_step(x, kl_weight)
        for k, v in terms.items():
            if k not in self._sums:  # the first step, never a captured one
                self._sums[k] = self.bk.xp.zeros((), dtype="float64")
            accumulate(self._sums[k], v, x.shape[0])

    def _warmup_of(self, record: dict[str, Any]) -> tuple[float, float] | None:
        """(the KL weight of the epoch's first step, of its last) when the first was below
        beta: the epoch's training loss is then the warm-up's objective, not recon + beta kl."""
        beta = self.model.kl_beta
        first = self.kl_weight(record["step"] - self.steps_per_epoch)
        return None if beta is None or first >= beta else (first, record["kl_weight"])

    def train_step(self, x: Any, kl_weight: float) -> dict[str, Any]:
        """forward + backward + optimizer step on one batch x (B, D); returns device terms."""
        model = self.model
        noise = model.draw_noise(x.shape[0])
        terms, grads = model.loss_and_grads(x, noise, kl_weight)  # reuses model.workspace
        self.optimizer.step(model.params, grads)
        return terms

    def _host_means(self, sums: dict[str, Any], seen: int, epoch: int) -> dict[str, float]:
        means = {k: float(to_numpy(v)) / seen for k, v in sums.items()}
        if not all(math.isfinite(v) for v in means.values()):
            raise self._diverged(epoch, "the training loss")
        return means

    def _diverged(self, epoch: int, what: str) -> TrainingDiverged:
        where, saved = self.config.checkpoint_path, self._last_saved(epoch)
        if where is None:
            kept = ""
        elif saved is None:
            kept = f"; no checkpoint of this run was written in {where.parent}"
        else:
            kept = f"; the last good checkpoint ({where}, epoch {saved}) is kept"
        return TrainingDiverged(
            f"training diverged: {what} became NaN or infinite in epoch {epoch} "
            f"(detected at step {self.step}); lower --lr, use --clip-norm, use --warmup-epochs, "
            f"or check the data for extreme values{kept}"
        )

    def _last_saved(self, epoch: int) -> int | None:
        """The last epoch before ``epoch`` whose checkpoint this run wrote or resumed from."""
        first = self._first_epoch or epoch
        saved = [e for e in range(first, epoch) if e % self.config.save_every == 0]
        if saved:
            return saved[-1]
        return first - 1 if first > 1 else None  # resumed from first - 1, or nothing saved

    # ------------------------------------------------------------------ pieces
    def _batch(self, idx: Any, bk: Backend, resident: bool = True) -> Any:
        """Rows idx as a (B, D) device array, binarized with ``bk``'s generator if dynamic:
        gathered from the resident training set (``idx`` positions in it, a device array), or
        copied from the host (``idx`` row numbers of the data set)."""
        rows = len(range(self.data.n)[idx]) if isinstance(idx, slice) else len(idx)
        if resident and self._resident is not None:
            out = self._device_batches.get(rows)
            if out is None:  # one per batch size (the last batch may be short)
                out = self._device_batches[rows] = bk.zeros((rows, self.data.n_features))
            x = bk.xp.take(self._resident, idx, axis=0, out=out)
        else:
            if rows not in self._host_batches:
                self._host_batches[rows] = self.data.batch_buffer(rows)
            x = bk.asarray(self.data.get_batch(idx, out=self._host_batches[rows]))  # reused
        return binarize(x, self.config.binarize, bk)

    def kl_weight(self, step: int) -> float:
        """beta * min(1, step / warm-up steps): the KL weight used at optimizer step ``step``."""
        beta = self.model.kl_beta or 0.0
        return kl_weight_at(beta, self.config.warmup_epochs, self.steps_per_epoch, step)

    def validate(self) -> dict[str, float]:
        """Mean terms on the validation part (no dropout, no corruption), nats per example.

        eps (VAE) and dynamic binarization come from a generator reseeded every call, so the
        number is comparable from epoch to epoch and the training stream is not touched."""
        bk = self.bk
        vbk = Backend(bk.name, bk.dtype.name, seed=self.config.seed + _VAL_SEED_OFFSET)
        sums: dict[str, Any] = {}
        size = max(self.config.batch_size, 1000)
        for start in range(0, len(self.val_idx), size):
            idx = self.val_idx[start : start + size]
            x = self._batch(idx, vbk, resident=False)
            noise = self.model.draw_noise(len(idx), backend=vbk, train=False)
            terms, _ = self.model.forward(x, noise, train=False)
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.astype("float64") * len(idx)
        return {k: float(to_numpy(v)) / len(self.val_idx) for k, v in sums.items()}

    # ------------------------------------------------------------------ saving and resuming
    def _save(self, epoch: int, last: bool) -> None:
        out = self.config.out_dir
        if out is None:
            return
        write_metrics(Path(out) / METRICS_NAME, self.history.records)
        if last or epoch % self.config.save_every == 0:
            save_checkpoint(
                Path(out) / CHECKPOINT_NAME,
                self.model,
                self.optimizer,
                epoch=epoch,
                step=self.step,
                train_config=self.config.to_dict(),
                history=self.history.records,
                data_fingerprint=self.data_fingerprint(),
                warmup_since=self._warmup_since,
                image_shape=self.data.image_shape,
            )

    def _resume(self, allow_changes: Sequence[str] = ()) -> int:
        """Load params, optimizer state, generator state and history; return the epoch done.
        The checkpoint and the settings are checked whole first: a refused one
        (CheckpointError, ResumeMismatch) changes nothing."""
        path = self.config.checkpoint_path
        if path is None:
            raise ValueError("resuming needs the run folder: set out_dir (--out DIR)")
        ckpt = self._ckpt = load_checkpoint(path)
        check_same_run(ckpt, self.config, allow_changes)  # the run's batch size, lr, seed, ...
        check_same_data(ckpt, self.data_fingerprint)  # and its data
        check_progress_fits(ckpt, self.steps_per_epoch, allow_changes)
        restore_training(ckpt, self.model, self.optimizer)
        self.history = History(list(ckpt.history))
        self.step = ckpt.step
        same_warmup = ckpt.train_config.get("warmup_epochs") == self.config.warmup_epochs
        # a changed warm-up (allowed) holds from the next epoch; so does the warm-up of a file
        # that does not record since when its own holds (an older one)
        since = ckpt.warmup_since
        self._warmup_since = since if same_warmup and since is not None else ckpt.epoch + 1
        return ckpt.epoch

    def data_fingerprint(self) -> dict[str, Any]:
        """The training data's fingerprint (:mod:`scratchvae.fingerprint`), computed once per
        :meth:`fit`: saved in each checkpoint, compared on resume."""
        if self._fingerprint is None:
            self._fingerprint = data_fingerprint(self.data)
        return self._fingerprint


@op
def accumulate(total: Any, value: Any, weight: float) -> None:
    """total += weight * value, in place: a 0-d float64 sum of a 0-d loss term (one kernel on
    a GPU instead of a cast, a product and a sum)."""
    total += value.astype("float64") * weight


def fit(
    model: AE,
    data: Dataset | Any,
    config: TrainConfig,
    resume: bool = False,
    replace: bool = False,
    allow_changes: Sequence[str] = (),
) -> History:
    """Train ``model`` on ``data`` (a :class:`Dataset`, or an (N, D) / (N, H, W) array checked
    by :func:`~scratchvae.data.dataset_from_array`: uint8 scaled by 1/255); ``resume``,
    ``replace``, ``allow_changes``: :meth:`Trainer.fit`. Returns the per-epoch :class:`History`."""
    return Trainer(model, data, config).fit(resume, replace, allow_changes)
