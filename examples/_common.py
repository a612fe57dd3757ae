"""What every example shares: its command line, the data, the output folder, training.

Each example is ``python examples/NAME.py [--data digits|mnist|fashion-mnist] [--data-dir DIR]
[--epochs N] [--out DIR] [--seed S] [--backend numpy|cupy] [--fast]``; figures go to
``examples/out/NAME/`` unless ``--out`` says otherwise. ``--fast`` is a smoke-test setting (a few
epochs on a few hundred examples): the figures are written, the numbers mean little.

Bad input ends the script with ONE line ``NAME.py: error: <what was wrong>`` on stderr and exit
status 2, no traceback (Ctrl-C: one line too, status 130): the parser (:class:`Parser`) refuses
an option's value itself (the types of :mod:`scratchvae.cliargs`), and :func:`run`, which every
script's ``__main__`` calls, turns the library's errors about the data, the backend or a file
(``ValueError``, which ``DataError`` is, ``BackendError``, ``OSError``) into that line. A run's
figures are moved into the output folder together at its end (:class:`Staged`).
"""

from __future__ import annotations

import argparse
import inspect
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from _output import (  # noqa: F401 - the examples' API
    Staged,
    clean_up,
    output_folder,
    show,
    without_staging,
)

from scratchvae.backend import Backend, BackendError
from scratchvae.cliargs import (
    COUNT,
    NATURAL,
    checked,
    error_message,
    one_line_error,
    stdout_gone,
)
from scratchvae.data import Dataset, dataset_from_array, load_dataset, train_val_split
from scratchvae.data.load import NoSuchSplit
from scratchvae.figure_parts import save_figure as save_atomically
from scratchvae.interrupts import Terminated, sigterm_interrupts
from scratchvae.train import History, TrainConfig, fit

HERE = Path(__file__).resolve().parent

#: What a user can cause and fix (bad data, a missing backend, an unwritable folder): one line.
USER_ERRORS = (ValueError, BackendError, OSError)

#: --n-train (the trainer holds out 10%, at least one row, and trains on the others) and
#: --repeats (a variance needs two draws).
AT_LEAST_TWO = checked(int, lambda v: v >= 2, "a whole number >= 2")


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line (no usage block) and exit status 2;
    ``--help`` still prints the usage and every option."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, one_line_error(message, self.prog) + "\n")


def run(main: Callable[[Sequence[str] | None], Any], argv: Sequence[str] | None = None) -> None:
    """Run an example's ``main(argv)`` as a program: a user error (:data:`USER_ERRORS`) ends it
    with one line ``NAME.py: error: ...`` on stderr and exit status 2, not a traceback."""
    prog = Path(inspect.getfile(main)).name
    finished = False
    try:
        with sigterm_interrupts():  # SIGTERM (`timeout`, `kill`) ends it as Ctrl-C does
            main(argv)
        finished = True
    except USER_ERRORS as exc:
        if stdout_gone(exc):  # `python example.py | head`: the reader stopped, no error
            raise SystemExit(1) from None
        message = without_staging(error_message(exc))  # a figure named where it would go
        print(one_line_error(message, prog), file=sys.stderr)
        raise SystemExit(2) from None
    except KeyboardInterrupt as exc:  # Ctrl-C: one line, not a traceback from the training
        what, status = ("terminated (SIGTERM)", 143) if isinstance(exc, Terminated) else (
            "interrupted", 130)  # fmt: skip
        print(f"{prog}: {what}; the output folder keeps what it held", file=sys.stderr)
        raise SystemExit(status) from None
    finally:  # a run that did not finish: its figures are dropped, the earlier run's kept
        clean_up(finished)


@dataclass
class Setup:
    """Parsed arguments plus what they lead to: backend, train/test data, output folder."""

    args: argparse.Namespace
    backend: Backend
    train: Dataset
    test: Dataset | None  # None: the example uses no test rows (setup's test_split=False)
    out: Path  # the output folder
    epochs: int
    t0: float  # the start: before the data are loaded
    told_test_rows: bool = False  # whether a line said that only some test rows are used
    staged: Staged = field(init=False)  # the run's figures until it has finished

    def __post_init__(self) -> None:
        self.staged = Staged(self.out)

    @property
    def figures(self) -> Path:
        """The hidden folder the figures are written to during the run (:class:`Staged`)."""
        return self.staged.figures

    def figure(self, name: str) -> Path:
        """Where to write the figure ``name`` during the run."""
        return self.staged.figure(name)

    def show(self, path: Path) -> None:
        """Note a figure written (at :meth:`figure`'s path); :meth:`finish` says where it is."""
        self.staged.show(path)

    def finish(self) -> None:
        """Move the run's figures into the output folder together, say which, and the whole
        run's time."""
        self.staged.move_in()
        print(f"done in {self.elapsed()} in all")

    @property
    def small(self) -> bool:
        """True for the 8x8 digits (D = 64): smaller networks than for 28x28 images."""
        return self.train.n_features <= 256

    def x_test(self, n: int | None = None) -> Any:
        """The first n test rows as a backend array (all when n is None). The first time that
        is fewer than all of them, a line says so (the first line counted them all)."""
        if self.test is None:
            raise ValueError("this example's setup() loaded no test split (test_split=False)")
        if n is not None and n < self.test.n and not self.told_test_rows:
            print(f"  using the first {n:,} of the {self.test.n:,} test rows")
            self.told_test_rows = True
        rows = self.test.get_batch(slice(0, n))
        return self.backend.asarray(rows)

    def elapsed(self) -> str:
        """The time since the script started, data loading included: the whole run."""
        return f"{time.perf_counter() - self.t0:.1f} s"


def summary(doc: str) -> str:
    """The first paragraph of a docstring on one line: an example's ``--help`` description
    (its first line alone stopped mid-sentence where the sentence wraps)."""
    return " ".join(doc.strip().split("\n\n")[0].split())


def parser(description: str) -> argparse.ArgumentParser:
    """The options every example takes; ``description``: the script's docstring (its first
    paragraph is shown) or one line. Every option's help says its default."""
    p = Parser(description=summary(description))
    p.add_argument(
        "--data", default="digits", help="digits, mnist, fashion-mnist, or a path (default digits)"
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder holding mnist/ or fashion-mnist/ (default $SCRATCHVAE_DATA, else "
        "~/.cache/scratchvae); MNIST is downloaded there when it is not found",
    )
    full = " (not for an example that trains in steps on all its rows: linear_ae_pca)"
    p.add_argument("--epochs", type=COUNT, default=None, help="default: per data set" + full)
    p.add_argument(
        "--batch-size", type=COUNT, default=None, help="default: 64 digits, 128 else" + full
    )
    p.add_argument(
        "--n-train",
        type=AT_LEAST_TWO,
        default=None,
        help="use only the first N training rows (default: all of them)",
    )
    p.add_argument("--out", default=None, help="output folder (default examples/out/NAME)")
    p.add_argument(
        "--seed",
        type=NATURAL,
        default=0,
        help="seed of the weights, the train/validation split and every random draw (default 0)",
    )
    p.add_argument("--backend", default="numpy", choices=("numpy", "cupy"), help="default numpy")
    p.add_argument(
        "--fast",
        action="store_true",
        help="a smoke test: 2 epochs on the first 300 training and 200 test rows (the numbers "
        "mean little)",
    )
    return p


_SHAPE = re.compile(r"(?: (?:train|test))? \((\d+) x (\d+)\)")


def describe(ds: Dataset) -> str:
    """The data set's description without its split and its full size, "(1500 x 64)": the
    first line counts the rows actually used after it. The image shape takes the size's place:
    ``UCI digits, 8 x 8 images, grey levels in [0, 1] (0..16 / 16)``."""
    h, w = ds.image_shape or (1, ds.n_features)
    what = f"{h} x {w} images" if h > 1 else f"{ds.n_features} features"
    text, found = _SHAPE.subn(f", {what}", ds.description, count=1)
    return text if found else f"{text}, {what}"


def _subset(ds: Dataset, rows: slice) -> Dataset:
    """Some rows of a data set, loaded into memory."""
    y = None if ds.y is None else ds.y[rows]
    sub = dataset_from_array(ds.get_batch(rows), y, ds.name, "bernoulli")
    # in memory now, whatever the file was
    sub.image_shape = ds.image_shape
    sub.description = ds.description.replace(", memory-mapped", "")
    return sub


def setup(
    name: str,
    argv: Sequence[str] | None,
    p: argparse.ArgumentParser,
    epochs: dict[str, int] | None,
    test_split: bool = True,
    rows: int | None = None,
) -> Setup:
    """Parse ``argv``, load the data, pick the epochs (``epochs["digits"]`` or ``["other"]``;
    None for an example that does not train by epochs: ``--epochs`` is refused there).
    ``test_split=False``: no test rows loaded, counted or held out; ``rows``: the most training
    rows the example uses. The parser's errors name the script (``NAME.py: error: ...``), also
    when ``main`` is called in a process that is not the script. The backend is made before the
    data are loaded (or downloaded), so that a missing CuPy is said at once, and so is an output
    folder that cannot be written (:func:`output_folder`)."""
    p.prog = f"{name}.py"
    args = p.parse_args(argv)
    if epochs is None and args.epochs is not None:
        p.error("--epochs does not apply to this example (see --help for what sets its length)")
    if epochs is None and args.batch_size is not None:  # no minibatches: all rows each step
        p.error("--batch-size does not apply to this example (each step takes all its rows)")
    t0 = time.perf_counter()
    backend = Backend(args.backend, "float32", seed=args.seed)
    out = output_folder(Path(args.out) if args.out else HERE / "out" / name)  # before a download
    train, test, held = load_dataset(args.data, "train", args.data_dir), None, ""
    try:
        test = load_dataset(args.data, "test", args.data_dir) if test_split else None
    except NoSuchSplit:  # a user's file or folder has no test split: hold out its last 10%
        # (only that: a test split that fails to load, MNIST's damaged or not downloaded, is
        # an error, not training rows evaluated as MNIST's test set)
        n_test = max(1, train.n // 10)
        held = f"; the last {n_test:,} of its {train.n:,} rows held out as the test split"
        test = _subset(train, slice(train.n - n_test, None))
        train = _subset(train, slice(0, train.n - n_test))
    n_train_all, n_test_all = train.n, 0 if test is None else test.n
    n_train = min(n for n in (300 if args.fast else args.n_train, rows, train.n) if n)
    if n_train < train.n:
        train = _subset(train, slice(0, n_train))
    if args.fast and test is not None and test.n > 200:
        test = _subset(test, slice(0, 200))
    for ds in (train, test) if test is not None else (train,):  # not images: 1 x D strips
        ds.image_shape = ds.image_shape or (1, ds.n_features)
    n_epochs, length, counted = 0, "", f"{train.n:,} train"
    if epochs is not None:
        default = epochs["digits"] if train.n_features <= 256 else epochs["other"]
        n_epochs = 2 if args.fast else (default if args.epochs is None else args.epochs)
        length = f", {n_epochs} epoch{'' if n_epochs == 1 else 's'}"
        # the trainer holds out a validation part (seeded by --seed, as in train()): the rows
        # it trains on are fewer than the training set's
        fit_rows, val_rows = train_val_split(train.n, TrainConfig.val_fraction, args.seed)
        counted = f"{len(fit_rows):,} train / {len(val_rows):,} validation"
    # the data set without its full size (the rows used follow), then what was left out of it
    parts = ((train, n_train_all, "training"), (test, n_test_all, "test"))
    subset = [f"the first {ds.n:,} of the {n:,} {part} rows" for ds, n, part in parts
              if ds is not None and ds.n < n]  # fmt: skip
    used = f"; from {' and '.join(subset)}" if subset else ""
    counted += "" if test is None else f" / {test.n:,} test"
    print(f"{name}: {describe(train)}; {counted} rows{length}{held}{used}")
    return Setup(args, backend, train, test, out, n_epochs, t0)


def train(
    model: Any, s: Setup, epochs: int | None = None, label: str | None = None, **config: Any
) -> History:
    """Train with the library's trainer (Adam, shuffled minibatches), quietly; the line printed
    names the model ``label`` (default: its class, "VAE"). ``--seed`` seeds the train/validation
    split and the validation noise (``TrainConfig.seed``) as well as the backend (weights,
    shuffling), as ``scratchvae train --seed`` does."""
    batch = s.args.batch_size
    if batch is None:
        batch = 64 if s.small else 128
    epochs = s.epochs if epochs is None else epochs
    cfg = dict(epochs=epochs, batch_size=batch, lr=1e-3, progress=False, seed=s.args.seed)
    cfg.update(config)
    start = time.perf_counter()  # this model's training alone, not the phases before it
    history = fit(model, s.train, TrainConfig(**cfg))
    took = time.perf_counter() - start
    last = history[-1]
    shown = ", ".join(f"{k} {v:.3f}" for k, v in last.items() if k.startswith(("train_", "val_")))
    n, name = len(history), label or type(model).__name__
    print(f"  {name}: {n} epoch{'' if n == 1 else 's'} in {took:.1f} s; last epoch: {shown}")
    return history


def save_figure(fig: Any, path: Path, title: str | None = None) -> Path:
    """Title, save (creating the folder) and close ``fig``; returns the path written. The save
    is atomic, as the library's figures are: a failure midway leaves the file that was there."""
    if title:
        fig.suptitle(title)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_atomically(fig, path)
