"""A checkpoint's epoch against its epoch target, and its history's KL weights against the run's
warm-up schedule: a crafted or damaged file is refused as damaged (one line), where it used to
be refused for the user's --epochs, or resumed with a wrong KL weight on record."""

from __future__ import annotations

import json

import numpy as np  # numpy-boundary: writing crafted files
import pytest

from scratchvae.autoencoders import SparseAE
from scratchvae.backend import Backend
from scratchvae.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scratchvae.cli import main
from scratchvae.data import dataset_from_array, load_dataset
from scratchvae.models import VAE
from scratchvae.train import TrainConfig, fit


@pytest.fixture(scope="module")
def tiny():
    digits = load_dataset("digits")
    return dataset_from_array(digits.x[:120], digits.y[:120], "digits-120")


def _vae(beta: float = 1.0) -> VAE:
    return VAE(64, hidden=[8], latent=2, beta=beta, backend=Backend("numpy", "float32", seed=0))


def _config(out, epochs: int, **kw) -> TrainConfig:
    return TrainConfig(**{"epochs": epochs, "batch_size": 40, "progress": False,
                          "out_dir": str(out), "val_fraction": 0.0, **kw})  # fmt: skip


@pytest.fixture(scope="module")
def warm_run(tiny, tmp_path_factory):
    """A VAE run of 3 epochs in the middle of a 4-epoch KL warm-up (beta 2)."""
    out = tmp_path_factory.mktemp("warm")
    fit(_vae(2.0), tiny, _config(out, 3, warmup_epochs=4.0))
    return out


def _meta(run) -> dict:
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        return json.loads(str(z["meta"]))


def _crafted(run, tmp_path, change) -> tuple:
    """A copy of ``run`` whose meta is ``change(meta)``."""
    with np.load(run / "checkpoint.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(str(arrays["meta"]))
    change(meta)
    arrays["meta"] = np.array(json.dumps(meta))
    out = tmp_path / "crafted"
    out.mkdir()
    (out / "metrics.jsonl").write_bytes((run / "metrics.jsonl").read_bytes())
    np.savez(out / "checkpoint.npz", **arrays)
    return out, (out / "checkpoint.npz").read_bytes()


def _damaged(out, needle: str) -> None:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(out)
    message = str(info.value)
    assert message.startswith(f"{out / 'checkpoint.npz'} is damaged: ") and "\n" not in message
    assert needle in message, message
    assert message.endswith("(not as scratchvae writes a checkpoint); use another checkpoint "
                            "or train again")  # fmt: skip


# ------------------------------------------------------------------ epoch above the epoch target
def _past_target(meta: dict) -> None:
    # one more epoch, consistent with the history and the step count, beyond the run's epochs
    last = meta["history"][-1]
    meta["history"].append({**last, "epoch": last["epoch"] + 1, "step": last["step"] + 3})
    meta["epoch"], meta["step"] = last["epoch"] + 1, last["step"] + 3


def test_an_epoch_above_the_run_s_epochs_is_damaged_not_a_too_small_epochs(warm_run, tmp_path):
    out, _ = _crafted(warm_run, tmp_path, _past_target)
    _damaged(out, "its epoch is 4, above the 3 epochs its train_config runs to")


def test_the_cli_refuses_it_as_damaged_and_leaves_the_file(warm_run, tmp_path, capsys):
    # it used to say "--epochs 3 is below the 4 epochs the run has done" to a user who gave none
    out, before = _crafted(warm_run, tmp_path, _past_target)
    assert main(["train", "--out", str(out), "--resume", "--no-progress", "--no-figures"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scratchvae: error: ") and "damaged" in err[0]
    assert "--epochs" not in err[0] and "above the 3 epochs" in err[0]
    assert (out / "checkpoint.npz").read_bytes() == before


def test_raised_epochs_on_resume_are_saved_with_the_run(warm_run, tmp_path, tiny):
    # the one way a run goes past its epochs: --epochs more on resume, saved as the new target
    out, _ = _crafted(warm_run, tmp_path, lambda m: None)
    fit(_vae(2.0), tiny, _config(out, 5, warmup_epochs=4.0), resume=True)
    ckpt = load_checkpoint(out)
    assert ckpt.epoch == ckpt.train_config["epochs"] == 5


def test_save_checkpoint_refuses_an_epoch_above_its_train_config_s(tmp_path):
    with pytest.raises(CheckpointError, match="its epoch is 2, above the 1 epochs its"):
        save_checkpoint(tmp_path / "c.npz", _vae(), epoch=2, train_config={"epochs": 1})
    assert not (tmp_path / "c.npz").exists()
    save_checkpoint(tmp_path / "c.npz", _vae(), epoch=2)  # a model saved by hand: no target


# ------------------------------------------------------------------ the KL weights on record
def test_the_warm_run_records_the_schedule_it_is_checked_against(warm_run):
    # 120 training rows / 40 = 3 steps an epoch; warm-up 4 epochs = 12 steps; an epoch records
    # the weight of its last step, s - 1 (s: the steps done when it ends)
    weights = [r["kl_weight"] for r in load_checkpoint(warm_run).history]
    assert weights == [2.0 * (s / 12) for s in (2, 5, 8)]


@pytest.mark.parametrize("epoch, value", [(0, 0.0), (1, 0.75000001), (2, 2.0), (2, -1.0)])
def test_a_wrong_kl_weight_on_record_is_damaged(warm_run, tmp_path, epoch, value):
    def change(meta: dict) -> None:
        meta["history"][epoch]["kl_weight"] = value

    out, _ = _crafted(warm_run, tmp_path, change)
    _damaged(out, f"its history record {epoch} has kl_weight {value}, where its warm-up gives")


def test_a_wrong_kl_weight_after_the_warm_up_is_damaged(tiny, tmp_path):
    fit(_vae(0.5), tiny, _config(tmp_path / "run", 2))  # no warm-up: beta throughout
    out, _ = _crafted(tmp_path / "run", tmp_path, lambda m: m["history"][1].update(kl_weight=1.0))
    _damaged(out, "its history record 1 has kl_weight 1.0, where its warm-up gives 0.5")


def test_a_wrong_warm_up_in_the_train_config_is_damaged(warm_run, tmp_path):
    out, _ = _crafted(warm_run, tmp_path, lambda m: m["train_config"].update(warmup_epochs=2.0))
    _damaged(
        out,
        "its history record 0 has kl_weight 0.3333333333333333, where its warm-up gives "
        "0.6666666666666666",
    )


def test_a_run_whose_warm_up_changed_on_resume_loads_and_resumes_again(tiny, tmp_path):
    # allow_changes=("warmup_epochs",): its first epochs followed the warm-up it had then
    fit(_vae(), tiny, _config(tmp_path, 1, warmup_epochs=4.0))
    fit(_vae(), tiny, _config(tmp_path, 2, warmup_epochs=2.0), resume=True,
        allow_changes=("warmup_epochs",))  # fmt: skip
    fit(_vae(), tiny, _config(tmp_path, 3, warmup_epochs=2.0), resume=True)
    ckpt = load_checkpoint(tmp_path)
    assert [r["kl_weight"] for r in ckpt.history] == [1 / 6, 5 / 6, 1.0]


def test_a_wrong_kl_weight_after_a_warm_up_change_is_still_damaged(tiny, tmp_path):
    run = tmp_path / "run"
    fit(_vae(), tiny, _config(run, 1, warmup_epochs=4.0))
    fit(_vae(), tiny, _config(run, 2, warmup_epochs=4.0), resume=True)
    fit(_vae(), tiny, _config(run, 3, warmup_epochs=8.0), resume=True,
        allow_changes=("warmup_epochs",))  # fmt: skip
    out, _ = _crafted(run, tmp_path, lambda m: m["history"][2].update(kl_weight=0.5))
    _damaged(
        out, "its history record 2 has kl_weight 0.5, where its warm-up gives 0.3333333333333333"
    )


def test_a_batch_size_change_follows_the_steps_each_epoch_took(tiny, tmp_path):
    fit(_vae(), tiny, _config(tmp_path, 1, warmup_epochs=4.0))
    fit(_vae(), tiny, _config(tmp_path, 2, warmup_epochs=4.0, batch_size=20), resume=True,
        allow_changes=("batch_size",))  # fmt: skip
    assert [r["kl_weight"] for r in load_checkpoint(tmp_path).history] == [
        2 / 12,
        8 / 24,
    ]  # 3, then 6 steps an epoch


def test_other_models_kl_weights_are_not_checked(tmp_path):
    # files written before kl_weight was a VAE's only recorded a sparse AE's beta (or 1.0)
    model = SparseAE(64, hidden=[8], latent=2, beta=3.0, backend=Backend(seed=0))
    history = [{"epoch": 1, "step": 2, "train_loss": 1.0, "kl_weight": 3.0}]
    config = TrainConfig(epochs=1).to_dict()
    save_checkpoint(tmp_path / "c.npz", model, epoch=1, step=2, train_config=config,
                    history=history)  # fmt: skip
    assert load_checkpoint(tmp_path / "c.npz").history == history


def test_a_file_without_kl_weights_or_steps_loads(warm_run, tmp_path):
    def change(meta: dict) -> None:
        for r in meta["history"]:
            del r["kl_weight"]
        del meta["history"][1]["step"]

    out, _ = _crafted(warm_run, tmp_path, change)
    assert load_checkpoint(out).epoch == 3


@pytest.mark.parametrize("since", [0, 5, 1.5, "2"])
def test_a_warmup_since_that_is_no_epoch_of_the_run_is_damaged(warm_run, tmp_path, since):
    out, _ = _crafted(warm_run, tmp_path, lambda m: m.update(warmup_since=since))
    with pytest.raises(CheckpointError, match="meta entry 'warmup_since' is .*, not an epoch of"):
        load_checkpoint(out)


def test_an_older_file_whose_warm_up_changed_on_resume_loads_and_resumes(tiny, tmp_path):
    """Written before warmup_since was (ba2024f allowed allow_changes=("warmup_epochs",)): its
    first epochs followed another warm-up, and nothing says which, so its KL weights are not
    compared (it was refused as damaged); a resume checks the epochs it trains itself."""
    run = tmp_path / "run"
    fit(_vae(), tiny, _config(run, 1, warmup_epochs=4.0))
    fit(_vae(), tiny, _config(run, 2, warmup_epochs=2.0), resume=True,
        allow_changes=("warmup_epochs",))  # fmt: skip
    older, _ = _crafted(run, tmp_path, lambda m: m.pop("warmup_since"))
    assert load_checkpoint(older).warmup_since is None
    fit(_vae(), tiny, _config(older, 3, warmup_epochs=2.0), resume=True)
    assert _meta(older)["warmup_since"] == 3  # the epochs from the resume on
    assert [r["kl_weight"] for r in load_checkpoint(older).history] == [1 / 6, 5 / 6, 1.0]


def test_every_checkpoint_records_since_when_its_warm_up_holds(warm_run):
    assert _meta(warm_run)["warmup_since"] == 1
