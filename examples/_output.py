"""An example's output folder: checked before the training, figures staged in a hidden folder
and moved in together when the run has finished (:class:`Staged`), what a failed run made
removed again (:func:`clean_up`, which :func:`_common.run` calls)."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from scratchvae.atomic import process_running
from scratchvae.checkpoint import CHECKPOINT_NAME
from scratchvae.cliargs import one_line
from scratchvae.history import METRICS_NAME

#: the hidden folders of the runs in this process not finished yet (removed when one fails)
_UNFINISHED: list[Path] = []
#: the output folders this process made (removed again, where empty, when its run fails)
_MADE: list[Path] = []


def _remove_empty_folders(top: Path) -> None:
    """Remove ``top`` and the folders under it, bottom up, where they hold nothing else."""
    for folder, _, _ in os.walk(top, topdown=False):
        try:
            os.rmdir(folder)
        except OSError:  # a file in it (or it is gone): kept
            pass


_STAGING = ".unfinished-"  # the hidden folders of the figures of runs not finished yet


def _remove_abandoned(out: Path) -> None:
    """Remove the staging folders in ``out`` whose run's process no longer exists."""
    for folder in out.glob(f"{_STAGING}*-*"):
        pid = folder.name[len(_STAGING) :].split("-")[0]
        if pid.isdigit() and not process_running(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


@dataclass
class Staged:
    """A run's figures, written to a hidden folder in the output folder ``out`` and moved into
    it together when the run has finished (:meth:`move_in`): a run that fails or is stopped
    midway leaves the figures of the run before it, not a mix of two runs."""

    out: Path
    staging: Path | None = None  # made when the first figure is written
    written: list[Path] = field(default_factory=list)

    @property
    def figures(self) -> Path:
        """The hidden folder the figures are written to during the run, named after this
        process (``.unfinished-PID-...``): the folders of runs whose process is gone (killed
        with SIGKILL, so nothing removed them) are removed first."""
        if self.staging is None:
            _remove_abandoned(self.out)
            prefix = f"{_STAGING}{os.getpid()}-"
            self.staging = Path(tempfile.mkdtemp(prefix=prefix, dir=self.out))
            _UNFINISHED.append(self.staging)
        return self.staging

    def figure(self, name: str) -> Path:
        """Where to write the figure ``name`` during the run."""
        return self.figures / name

    def show(self, path: Path) -> None:
        """Note a figure written (at :meth:`figure`'s path); :meth:`move_in` says where it is."""
        self.written.append(path)

    def move_in(self) -> None:
        """Move the figures into the output folder (each replacing the one of the same name)
        and say which."""
        for path in self.written:
            os.replace(path, self.out / path.name)
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            _UNFINISHED.remove(self.staging)
        for path in self.written:
            show(self.out / path.name)


def output_folder(out: Path) -> Path:
    """``out``, created, once it is known that the figures can be written there: a folder that
    cannot be written, or a file in the way, is said now, not after the training; a folder
    holding a ``scratchvae train`` run is refused (its figures have the same names)."""
    shown = one_line(str(out))
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {shown} is a file, not a folder; give a folder for the figures")
    if (out / CHECKPOINT_NAME).exists() or (out / METRICS_NAME).exists():
        raise ValueError(
            f"--out {shown} holds a scratchvae training run (its {CHECKPOINT_NAME} or "
            f"{METRICS_NAME}); the example would replace that run's figures: choose another folder"
        )
    # the first folder mkdir makes (out or a parent), removed again by run() if the run stops
    # before its figures are in (a --data that cannot be read left an empty folder behind)
    made = next((p for p in (*reversed(out.parents), out) if not p.exists()), None)
    if made is not None:
        _MADE.append(made)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):  # can a file be written there?
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise OSError(f"cannot write the figures to --out {shown}: {reason}") from None
    return out


def without_staging(text: str) -> str:
    """``text`` (an error message) with the hidden folders of this process's unfinished runs
    taken out of its paths: a figure that could not be written is named where it goes in the
    output folder (whose earlier figure is intact), not in a folder that is removed."""
    for staging in _UNFINISHED:
        text = text.replace(f"{staging}{os.sep}", f"{staging.parent}{os.sep}")
    return text


def show(path: Path) -> None:
    print(f"  wrote {one_line(str(path))}")  # a newline in --out stays on the line


def clean_up(finished: bool) -> None:
    """At a run's end: the figures of a run that did not finish are dropped (the earlier run's
    kept), and the output folders it made go again if nothing was put in them."""
    while _UNFINISHED:
        shutil.rmtree(_UNFINISHED.pop(), ignore_errors=True)
    while _MADE:
        made = _MADE.pop()
        if not finished:
            _remove_empty_folders(made)
