"""The data folder: both layouts (DIR/mnist/<files> and DIR/<files>), which data set a folder's
files belong to, messages that name only real options, and downloads that fail or are refused
leaving no folder behind.

Offline: downloads come from an HTTP server on 127.0.0.1 inside the test (conftest.serve)."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from idx_helpers import DEAD_URL, STEMS, files_under, idx_bytes, md5, write

from scratchvae.data import DataError, download, idx, load_dataset
from scratchvae.data.idx import download_file, fetch_idx, idx_folder


@pytest.fixture
def other_set(monkeypatch):
    """Fashion-MNIST's md5 table replaced by that of other tiny files: (gz bytes by name, table)."""
    rng = np.random.default_rng(1)
    raw = {
        STEMS["train"][0]: idx_bytes(rng.integers(0, 256, (4, 28, 28), dtype=np.uint8)),
        STEMS["train"][1]: idx_bytes(np.arange(4, dtype=np.uint8)),
    }
    gz = {f"{stem}.gz": gzip.compress(b, mtime=0) for stem, b in raw.items()}
    table = {name: md5(b) for name, b in {**raw, **gz}.items()}
    monkeypatch.setitem(idx.CHECKSUMS, "fashion-mnist", table)
    return gz


# --------------------------------------------------------------------------------------------
# Layouts
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["gz", "raw"])
def test_data_dir_holding_the_files_directly(tmp_path, tiny, tiny_checksums, kind):
    flat = write(tmp_path / "downloads", tiny[kind])
    ds = load_dataset("mnist", "test", data_dir=flat, download=False)
    np.testing.assert_array_equal(ds.y, tiny["arrays"]["test"][1])
    assert idx_folder(flat, "mnist") == flat
    assert sorted(p.name for p in flat.iterdir()) == sorted(tiny[kind])  # nothing added


def test_nested_folder_wins_and_empty_root_means_nested(tmp_path, tiny, tiny_checksums):
    assert idx_folder(tmp_path, "mnist") == tmp_path / "mnist"  # where downloads go
    write(tmp_path, tiny["gz"])
    assert idx_folder(tmp_path, "mnist") == tmp_path
    write(tmp_path / "mnist", {f"{STEMS['test'][1]}.gz": tiny["gz"][f"{STEMS['test'][1]}.gz"]})
    assert idx_folder(tmp_path, "mnist") == tmp_path / "mnist"


def test_flat_folder_missing_files_are_downloaded_into_it(tmp_path, tiny, tiny_checksums, serve):
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    name = f"{STEMS['train'][0]}.gz"
    flat = write(tmp_path / "mine", {name: tiny["gz"][name]})
    assert load_dataset("mnist", data_dir=flat, base_url=url).n == 5
    assert sorted(p.name for p in flat.iterdir()) == sorted(f"{s}.gz" for s in STEMS["train"])


def test_another_data_sets_files_are_told_apart_by_md5(
    tmp_path, tiny, tiny_checksums, other_set, serve
):
    """MNIST and Fashion-MNIST files have the same names: a folder holding one set's files
    directly is not taken for the other's, whose files go to their own folder."""
    root = write(tmp_path / "root", other_set)  # Fashion-MNIST's (tiny) train files
    assert idx_folder(root, "fashion-mnist") == root
    assert idx_folder(root, "mnist") == root / "mnist"
    assert load_dataset("fashion-mnist", data_dir=root, download=False).n == 4
    url = serve(write(tmp_path / "mirror", tiny["gz"]))
    assert load_dataset("mnist", data_dir=root, base_url=url).n == 5
    assert {p.parent for p in files_under(root / "mnist")} == {root / "mnist"}
    # one set's file put in the other's folder is named as such
    name = f"{STEMS['train'][0]}.gz"
    (root / "mnist" / name).write_bytes(other_set[name])
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=root, download=False)
    assert f"is not the official MNIST file (it is Fashion-MNIST's {name})" in str(err.value)


def test_raw_bytes_under_a_gz_name_are_accepted(tmp_path, tiny, tiny_checksums):
    folder = write(tmp_path / "mnist", {f"{s}.gz": tiny["raw"][s] for s in STEMS["test"]})
    assert load_dataset("mnist", "test", data_dir=tmp_path, download=False).n == 3
    assert folder.is_dir()


# --------------------------------------------------------------------------------------------
# Failed and refused downloads: nothing left behind, messages with real options only
# --------------------------------------------------------------------------------------------


def _assert_real_options_only(message: str) -> None:
    assert "base_url" not in message and "data_dir=" not in message and "\n" not in message


@pytest.mark.parametrize("how", ["dead", "404", "refused"])
def test_failed_download_removes_the_folders_it_made(tmp_path, tiny, tiny_checksums, serve, how):
    mirror = write(tmp_path / "mirror", {} if how == "404" else tiny["gz"])
    url = DEAD_URL if how == "dead" else serve(mirror)
    if how == "refused":
        tiny_checksums[f"{STEMS['train'][0]}.gz"] = "0" * 32
    root = tmp_path / "new" / "deeper"
    with pytest.raises(DataError) as err:
        load_dataset("mnist", data_dir=root, base_url=url)
    message = str(err.value)
    _assert_real_options_only(message)
    assert "$SCRATCHVAE_MNIST_MIRROR" in message and str(root / "mnist") in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]  # new/ is gone too
    if how == "404":  # the reply the HTTPError holds, and its socket, closed (was left to the
        reply = err.value.__context__.fp  # GC: a ResourceWarning in whichever test came next)
        assert reply is None or reply.closed


def test_failed_download_keeps_folders_that_were_there(tmp_path, tiny, tiny_checksums):
    root = tmp_path / "root"
    write(root, {"notes.txt": b"mine"})
    (root / "mnist").mkdir()
    with pytest.raises(DataError, match="could not download"):
        load_dataset("mnist", data_dir=root, base_url=DEAD_URL)
    assert (root / "mnist").is_dir() and (root / "notes.txt").read_bytes() == b"mine"
    assert files_under(root) == [root / "notes.txt"]


def test_second_file_failing_keeps_the_first_verified_one(tmp_path, tiny, tiny_checksums, serve):
    first = f"{STEMS['train'][0]}.gz"
    url = serve(write(tmp_path / "mirror", {first: tiny["gz"][first]}))  # labels: 404
    with pytest.raises(DataError, match="404"):
        load_dataset("mnist", data_dir=tmp_path / "cache", base_url=url)
    assert files_under(tmp_path / "cache") == [tmp_path / "cache" / "mnist" / first]


def test_interrupted_download_removes_the_folders_it_made(tmp_path, serve, monkeypatch):
    url = serve(write(tmp_path / "mirror", {"f.gz": b"x" * 100})) + "f.gz"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_stream", interrupted)
    with pytest.raises(KeyboardInterrupt):
        download_file(url, tmp_path / "a" / "b" / "f.gz", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mirror"]


def test_download_file_messages_and_advice(tmp_path, serve):
    url = serve(write(tmp_path / "mirror", {"f.gz": b"payload"})) + "f.gz"
    dest = tmp_path / "cache" / "f.gz"
    with pytest.raises(DataError) as err:
        download_file(url, dest, "0" * 32, progress=False, advice="ask a friend")
    assert str(err.value).endswith("so it was not kept; ask a friend")
    (tmp_path / "a-file").write_bytes(b"")
    with pytest.raises(DataError) as err:
        download_file(url, tmp_path / "a-file" / "f.gz", progress=False)
    message = str(err.value)
    _assert_real_options_only(message)
    assert "pick a writable folder with --data-dir or $SCRATCHVAE_DATA" in message
    assert (tmp_path / "a-file").read_bytes() == b""


def test_fetch_idx_messages_name_the_mirror_variable(tmp_path):
    with pytest.raises(DataError) as err:
        fetch_idx("fashion-mnist", "test", tmp_path, base_url=DEAD_URL, progress=False)
    message = str(err.value)
    _assert_real_options_only(message)
    assert "set $SCRATCHVAE_FASHION_MNIST_MIRROR to another mirror" in message
    assert "t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz (gzipped or raw)" in message
    assert list(tmp_path.iterdir()) == []


def test_progress_bar_only_on_a_terminal_by_default(tmp_path, serve, capfd):
    url = serve(write(tmp_path / "mirror", {"f.gz": b"x" * 5000})) + "f.gz"
    download_file(url, tmp_path / "a" / "f.gz")  # stderr is captured here: not a terminal
    err = capfd.readouterr().err  # plain lines, no bar's carriage returns
    assert "\r" not in err and err.startswith(f"downloading {url} (5.0 kB) ...\n")
    download_file(url, tmp_path / "b" / "f.gz", progress=True)
    assert "f.gz" in capfd.readouterr().err
    download_file(url, tmp_path / "c" / "f.gz", progress=False)
    assert capfd.readouterr().err == ""


def test_resume_with_data_dir_finds_the_data_where_it_lives_now(
    tmp_path, tiny, tiny_checksums, monkeypatch, capsys
):
    """A run on MNIST records its --data-dir; the files moved, `train --resume --data-dir NEW`
    continues from them (and records NEW), where a plain --resume looks in the old place."""
    from scratchvae.checkpoint import load_checkpoint
    from scratchvae.cli import main

    monkeypatch.setenv("SCRATCHVAE_MNIST_MIRROR", DEAD_URL)  # no download in this test
    old, run = write(tmp_path / "old", tiny["gz"]), tmp_path / "run"
    tiny_run = ["--hidden", "4", "--latent", "2", "--batch-size", "2", "--no-progress"]
    argv = ["train", "--data", "mnist", "--out", str(run), *tiny_run, "--no-figures"]
    assert main([*argv, "--data-dir", str(old), "--epochs", "1"]) == 0
    new = tmp_path / "new"
    old.rename(new)
    assert main(["train", "--resume", "--out", str(run), "--epochs", "2"]) == 2
    assert str(old) in capsys.readouterr().err.strip().splitlines()[-1]
    resume = ["train", "--resume", "--out", str(run), "--epochs", "2", "--no-figures"]
    assert main([*resume, "--data-dir", str(new)]) == 0
    ckpt = load_checkpoint(run)
    assert ckpt.epoch == 2 and ckpt.train_config["data_dir"] == str(new)


def test_the_folders_a_failed_download_made_go_but_not_one_holding_another_file(tmp_path):
    """Someone else's file appeared meanwhile in a folder the download made: that folder and
    those above it stay (they are not empty), the file untouched; the empty one below goes."""
    deep = tmp_path / "a" / "b" / "c"
    made = download._missing_folders(deep)  # deepest first: c, b, a
    deep.mkdir(parents=True)
    (tmp_path / "a" / "b" / "theirs.txt").write_text("keep")
    download._remove_empty(made)
    assert not deep.exists() and (tmp_path / "a" / "b" / "theirs.txt").read_text() == "keep"
