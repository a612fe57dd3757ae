"""scratchvae.commands called directly, without the parser: defaults, and bad input raised as
exceptions for ``cli.main`` to print (tests/test_cli.py runs the commands through main)."""

from __future__ import annotations

import argparse

import pytest

from scratchvae import commands


def test_the_default_settings_for_digits():
    assert commands._dataset_defaults("digits") == ([256], 2, 100, 64, None)  # init: he for
    # relu, the default activation, glorot for tanh (the library's default_init)
    # MNIST-sized data: the PyTorch example's protocol, PyTorch's default init included
    assert commands._dataset_defaults("mnist") == ([400], 20, 10, 128, "uniform")
    assert commands._dataset_defaults(" Digits ") == commands._SMALL_DEFAULTS


def test_run_names_and_output_folders():
    assert commands._run_name("fashion-mnist") == "fashion-mnist"
    assert commands._run_name("/data/my_images.npz") == "my_images"
    assert commands._default_out("digits", "vae").as_posix() == "runs/digits-vae"
    assert commands._out_dir("runs/x/checkpoint.npz").as_posix() == "runs/x"
    assert commands._out_dir("runs/x").as_posix() == "runs/x"
    assert commands._guess_shape(784) == (28, 28) and commands._guess_shape(10) is None


def test_a_checkpoint_file_of_any_name_has_its_folder_for_figures(tmp_path):
    (tmp_path / "b.ckpt").write_bytes(b"")  # was: b.ckpt taken for the figures' folder
    assert commands._out_dir(str(tmp_path / "b.ckpt")) == tmp_path
    (tmp_path / "odd.npz").mkdir()  # a folder is a run folder, whatever its name
    assert commands._out_dir(str(tmp_path / "odd.npz")) == tmp_path / "odd.npz"


@pytest.mark.parametrize(
    "command, options, message",
    [
        (commands.cmd_evaluate, {}, "no run folder"),
        (commands.cmd_sample, {"n": 0}, "--n must be from 1 to 10000, got 0"),
        (commands.cmd_reconstruct, {"n": 1001}, "--n must be from 1 to 1000, got 1001"),
        (commands.cmd_plot, {}, "no run folder"),
    ],
)
def test_bad_input_raises_cli_error(tmp_path, command, options, message):
    args = argparse.Namespace(run=str(tmp_path / "missing"), **options)
    with pytest.raises(commands.CLIError, match=message):
        command(args)
