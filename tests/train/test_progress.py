"""What a training run shows: plain lines when standard error is not a terminal, a bar when it is."""

from __future__ import annotations

import re

from slimtrain.train import trainer as trainer_module
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

TREE = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": [8]}},
    "train": {"epochs": 2, "batch_size": 128, "device": "cpu", "tensorboard": False, "log_every_steps": 3},
}


def test_plain_lines_per_epoch_and_a_summary(tmp_path, capsys):
    """Not a terminal (here: captured): no bar and no carriage return, a values line at the first log step,
    one line per epoch with train loss, validation accuracy, lr and time, and a closing summary.
    """
    results = Trainer(recipe_from_dict(TREE), tmp_path).fit()
    err = capsys.readouterr().err
    assert "\r" not in err
    lines = err.strip().splitlines()
    assert re.fullmatch(r"epoch 1/2 step 3/\d+: loss \S+, train accuracy 0\.\d{3}, \d+ samples/s", lines[0])
    epochs = [line for line in lines if re.fullmatch(r"epoch \d/2: train loss .*", line)]
    assert len(epochs) == 2
    assert re.fullmatch(r"epoch 2/2: train loss \S+, val accuracy 0\.\d{4}, lr \S+, \d+s", epochs[1])
    assert f"val accuracy {results['val_accuracy']:.4f}" in epochs[1]
    assert lines[-1].startswith(f"trained {results['steps']} steps (2 epochs) in ")


def test_a_terminal_gets_a_live_bar(tmp_path, capsys, monkeypatch):
    """On a terminal the epoch's bar is drawn (and redrawn in place), the epoch lines still follow."""
    monkeypatch.setattr(trainer_module.sys.stderr, "isatty", lambda: True)
    Trainer(recipe_from_dict(TREE), tmp_path).fit()
    err = capsys.readouterr().err
    assert "\r" in err and "epoch 1/2:" in err and "loss=" in err


def test_progress_off_shows_nothing(tmp_path, capsys):
    """``train.progress: false`` prints nothing at all."""
    Trainer(recipe_from_dict(TREE, ["train.progress=false"]), tmp_path).fit()
    assert capsys.readouterr().err == ""
