"""Every error the command line prints is ONE line, whatever the paths it names hold."""

from __future__ import annotations

import pytest

from scratchvae.cli import main
from scratchvae.cliargs import one_line, one_line_error


def test_control_characters_are_escaped_as_repr_writes_them():
    assert one_line("a\nb\r\tc\x1b[31m d\u2028e") == "a\\nb\\r\\tc\\x1b[31m d\\u2028e"
    assert one_line("caf\u00e9 /data/x.npy") == "caf\u00e9 /data/x.npy"  # printable: kept
    assert one_line_error("  \n ") == "scratchvae: error: unknown error"
    assert one_line_error("bad\nthing", "ex.py") == "ex.py: error: bad\\nthing"


@pytest.mark.parametrize("name", ["two\nlines.npy", "car\rriage.npy", "tab\tand\x1b.npy"])
def test_a_path_holding_a_newline_gives_one_whole_error_line(tmp_path, capsys, name):
    """A newline in a path ended the message at the newline, so the line named half a path
    (or, printed whole, became two lines)."""
    bad = tmp_path / name
    bad.write_bytes(b"not a numpy file")
    assert main(["train", "--data", str(bad), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\r" not in err and "\x1b" not in err
    line = err.rstrip("\n")
    assert line.startswith("scratchvae: error: could not read ")
    assert one_line(str(bad)) in line  # the whole path, its control characters escaped
    assert line.endswith("replace it with an intact copy (np.save writes one)")


def test_what_a_command_wrote_is_said_on_one_line_whatever_the_folder_holds(tmp_path, capsys):
    """The training summary and the figure commands printed the run folder as it is on stdout:
    a folder named with a newline split the line in two (every error escaped it already)."""
    run = tmp_path / "two\nlines\x1b[31m"
    argv = ["--data", "digits", "--epochs", "1", "--hidden", "16", "--no-progress"]
    assert main(["train", *argv, "--out", str(run)]) == 0
    assert main(["sample", str(run), "--n", "4", "--out", str(run / "a\nb.png")]) == 0
    assert main(["plot", str(run)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\nlines" not in out
    summary, sample, plot = [line for line in out.splitlines() if line.startswith("scratchvae:")]
    assert summary.startswith("scratchvae: 1 epoch, validation loss ")
    assert summary.endswith(f"in {one_line(str(run))}/")
    assert sample == f"scratchvae: wrote {one_line(str(run / 'a' / 'b.png'))}".replace(
        "a/b.png", "a\\nb.png"
    )
    assert plot.startswith("scratchvae: wrote ") and one_line(str(run / "curves.png")) in plot


def _third_party_failure(*args, **kwargs):
    """What a library outside scratchvae raises: a message of many lines (a listing)."""
    listing = "\n".join(f"  candidate {i}: /usr/lib/x{i}.so (no such symbol)" for i in range(40))
    raise ValueError(f"could not find a loader for the data\n{listing}\n")


def test_a_third_party_error_of_many_lines_is_its_first_line_and_says_the_rest_was_cut(
    tmp_path, capsys, monkeypatch
):
    """A library's error of 41 lines was printed whole on the one error line, every newline
    written as \\n: 2,000 characters no one reads. Its first line is kept, and how many were
    cut; a message scratchvae writes keeps every line (a path in it may hold a newline)."""
    from scratchvae import commands

    monkeypatch.setattr(commands, "load_dataset", _third_party_failure)
    assert main(["train", "--epochs", "1", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "scratchvae: error: could not find a loader for the data (40 more lines of the "
        "message cut)\n"
    )
