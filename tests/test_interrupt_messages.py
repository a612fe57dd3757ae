"""What the program says when Ctrl-C or SIGTERM ends a run: one line, whatever the folder."""

from scratchvae.checkpoint import CHECKPOINT_NAME
from scratchvae.history import METRICS_NAME
from scratchvae.interrupts import interrupted


def test_a_folder_with_a_newline_in_its_name_stays_on_one_line(tmp_path, capsys):
    """The folder's name was printed as it is: a newline in it broke the message in two."""
    out = tmp_path / "run\nnext\x1b[2J"
    out.mkdir()
    cases = [(False, False), (True, True)]  # nothing kept yet; the run had finished
    for terminated, trained in cases:
        assert interrupted(out, terminated, trained) == (143 if terminated else 130)
    (out / METRICS_NAME).write_text("")
    interrupted(out, False)
    (out / CHECKPOINT_NAME).write_bytes(b"")
    interrupted(out, False)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 4, lines
    assert all("run\\nnext\\x1b[2J" in line and "\x1b" not in line for line in lines), lines
    assert "scratchvae plot" in lines[1] and "--force" in lines[2] and "--resume" in lines[3]
