"""Exits: exit codes, one-line messages that name the culprit, Ctrl-C/SIGTERM with a checkpoint, ``--debug``.

Signals go to real ``python -m slimtrain`` processes (:func:`start_slimtrain`); the trainer's stop at a step
boundary is also checked in this process, where a step sends the signal itself, so the moment is exact.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import slimtrain.experiments.report as report_module
import slimtrain.train.trainer as trainer_module
from slimtrain.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main
from slimtrain.errors import RecipeError
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.trainer import Trainer

from .tiny_runs import assert_same_state, final_state, tiny_tree, trained_state, write_recipe

EXIT_INTERRUPTED = 130
SOURCE = Path(__file__).resolve().parents[2] / "src"


def _sigterm_guard(signum: int, frame: object) -> None:
    raise KeyboardInterrupt("SIGTERM reached the test's guard, not the trainer's handler")


@pytest.fixture(autouse=True)
def _interruptible():
    """Ctrl-C as in a terminal, even when the tests run where SIGINT is ignored (a background job), and a
    SIGTERM that fails the test instead of ending the test process when the trainer does not handle it.
    """
    previous = (
        signal.signal(signal.SIGINT, signal.default_int_handler),
        signal.signal(signal.SIGTERM, _sigterm_guard),
    )
    yield
    signal.signal(signal.SIGINT, previous[0])
    signal.signal(signal.SIGTERM, previous[1])


def start_slimtrain(argv: list[str]) -> subprocess.Popen:
    """Start ``python -m slimtrain <argv>`` on this checkout's sources; stdout and stderr are captured.

    SIGINT gets its default action in the child (a background job's "ignored" would be inherited).
    """
    env = {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen(
        [sys.executable, "-m", "slimtrain", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def signal_when(process: subprocess.Popen, ready: Any, signum: int, timeout: float = 120) -> str:
    """Send ``signum`` once ``ready()`` is true (while the process runs); return its stderr after it ends."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and not ready() and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, f"ended before the signal: {process.communicate()[1]}"
    process.send_signal(signum)
    _, err = process.communicate(timeout=timeout)
    return err


def _train(tree: dict, run: Path) -> None:
    Trainer(recipe_from_dict(tree), run).fit()


# -- bad input: exit 2, named in the user's terms -----------------------------------------------------------
def test_unsupported_structure_exits_2_naming_the_supported_ones(tmp_path, capsys):
    """An SFW k-support run swept or exported with filter pruning: exit 2 naming it and the valid ones."""
    run = tmp_path / "run"
    _train(tiny_tree("sfw", train={"max_steps": 2}), run)
    for argv in (["sweep", str(run), "--structure", "filter"], ["export", str(run), "--level", "0.5"]):
        if argv[0] == "export":
            argv += ["--structure", "filter", "--latency-batch-sizes"]
        assert main(argv) == EXIT_BAD_INPUT
        err = capsys.readouterr().err
        assert "structure 'filter'" in err and "unstructured, native" in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_cuda_on_a_machine_without_cuda_exits_2(tmp_path, capsys, monkeypatch):
    """``--set train.device=cuda`` without CUDA: exit 2 naming the key and that CUDA is not available."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = write_recipe(tiny_tree("dense"), tmp_path / "r.yaml")
    argv = ["train", str(recipe), "--run-dir", str(tmp_path / "run"), "--set", "train.device=cuda"]
    assert main(argv) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "'train.device'" in err and "CUDA is not available" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.parametrize(
    ("argv", "option", "expected"),
    [
        (["export", "RUN", "--level", "abc"], "--level", "[0, 1)"),
        (["export", "RUN", "--level", "1.5"], "--level", "[0, 1)"),
        (["export", "RUN", "--level", "0.5", "--round-to", "x"], "--round-to", "positive integer"),
        (["sweep", "RUN", "--levels", "0.5", "abc"], "--levels", "a number"),
    ],
    ids=["level-abc", "level-1.5", "round-to-x", "levels-abc"],
)
def test_bad_option_value_names_the_option_and_what_it_expects(argv, option, expected, capsys):
    """Not "invalid _level value" (argparse's default): the message names the option and what it expects."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}:" in err and expected in err and "invalid" not in err, err


def test_model_kwargs_set_from_the_dataset_are_refused_at_validation(tmp_path, capsys):
    """``model.kwargs.in_channels`` (set from the dataset) is refused naming the key, before any work."""
    tree = tiny_tree("dense", model={"name": "mlp", "kwargs": {"widths": [12], "in_channels": 3}})
    with pytest.raises(RecipeError, match=r"'model\.kwargs\.in_channels': set from the dataset"):
        recipe_from_dict(tree)
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "model.kwargs.in_channels" in err and "(got 3)" in err and "multiple values" not in err, err
    assert not (tmp_path / "run").exists()
    # The other dataset-given arguments too; other keyword arguments still pass.
    for key in ("num_classes", "image_size"):
        with pytest.raises(RecipeError, match=rf"'model\.kwargs\.{key}'"):
            recipe_from_dict(tiny_tree("dense", model={"name": "mlp", "kwargs": {key: 4}}))
    recipe_from_dict(tiny_tree("dense", model={"name": "mlp", "kwargs": {"widths": [3]}}))


# -- failed work: exit 1 ------------------------------------------------------------------------------------
def test_missing_manifest_is_named_and_a_final_checkpoint_not_ignored(tmp_path, capsys):
    """With ``checkpoints/manifest.json`` deleted, sweep says the manifest is missing (not "no final
    checkpoint") and that ``final.pt`` cannot be verified; ``--resume`` refuses too, not retraining over it.
    """
    tree = tiny_tree("dense", train={"max_steps": 2})
    run = tmp_path / "run"
    _train(tree, run)
    (run / "checkpoints" / "manifest.json").unlink()
    final = (run / "checkpoints" / "final.pt").read_bytes()
    assert main(["sweep", str(run)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "manifest.json is missing" in err and "final.pt" in err and "cannot be verified" in err, err
    assert "no final checkpoint" not in err
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(run), "--resume"]) == EXIT_FAILED
    assert "manifest.json is missing" in capsys.readouterr().err
    assert (run / "checkpoints" / "final.pt").read_bytes() == final


def test_divergence_message_is_not_glued_to_the_progress_bar(tmp_path, capsys):
    """The bar (shown: ``train.progress``) is cleared before the divergence message, which starts its line."""
    tree = tiny_tree("dense", optimizer={"lr": 1e30}, train={"progress": True})
    recipe = write_recipe(tree, tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(tmp_path / "run")]) == EXIT_FAILED
    err = capsys.readouterr().err
    before, message = err.split("slimtrain train:", 1)
    assert "epoch 1/2" in before  # the bar was shown
    shown = before.rstrip("\r").split("\r")[-1]  # what the terminal's line shows before the message
    assert before.endswith("\n") or (before.endswith("\r") and not shown.strip()), repr(before[-200:])
    assert "at step" in message and "Traceback" not in err


# -- interruptions: exit 130, a checkpoint, the --resume command --------------------------------------------
# 12 epochs (108 steps): the signal lands mid-run however late a loaded machine lets a test send it.
INTERRUPTED_TREE = tiny_tree("dense", train={"max_steps": None, "epochs": 12, "checkpoint_every_steps": 0})


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_train_checkpoints_exits_130_and_names_the_resume_command(signum, tmp_path):
    """SIGINT/SIGTERM once the first log line is written: a checkpoint at the next step boundary (the recipe
    has none mid-epoch), exit 130, one line naming the ``--resume`` command, which then ends with bitwise
    the weights of an uninterrupted run.
    """
    _train(INTERRUPTED_TREE, tmp_path / "reference")
    expected = trained_state(final_state(tmp_path / "reference"))
    run = tmp_path / "run"
    argv = ["train", str(write_recipe(INTERRUPTED_TREE, tmp_path / "r.yaml")), "--run-dir", str(run)]
    child = start_slimtrain([*argv, "--set", "train.progress=false"])
    log = run / "train_log.csv"
    err = signal_when(child, lambda: log.exists() and log.stat().st_size > 0, signum)
    assert child.returncode == EXIT_INTERRUPTED, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"stopped by {signal.Signals(signum).name} after step" in lines[0]
    command = lines[0].split("continue with: ", 1)[1]
    assert command == shlex.join(["slimtrain", *argv, "--set", "train.progress=false", "--resume"])
    entries = CheckpointStore(run / "checkpoints").entries()
    assert entries and not entries[-1]["final"] and entries[-1]["file"] in lines[0]
    assert entries[-1]["step"] < 12 * 9  # stopped before the end
    assert main(shlex.split(command)[1:]) == EXIT_OK
    assert_same_state(trained_state(final_state(run)), expected)


def _signalling_trainer(tree: dict, run: Path, at_step: int, signals: list[int]) -> Trainer:
    """A trainer whose step ``at_step`` sends ``signals`` to this process in the middle of the step."""
    trainer = Trainer(recipe_from_dict(tree), run)
    step = trainer.components.method.training_step

    def signalling(model, inputs, targets, ctx):
        out = step(model, inputs, targets, ctx)
        if ctx.step == at_step:
            for signum in signals:
                os.kill(os.getpid(), signum)
        return out

    trainer.components.method.training_step = signalling
    return trainer


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_trainer_stops_at_the_step_boundary_and_resumes_exactly(signum, tmp_path):
    """The step in which the signal arrives completes, is checkpointed, and ``fit`` raises KeyboardInterrupt
    naming signal, step and checkpoint; the handlers are put back; resuming gives the uninterrupted state.
    """
    tree = tiny_tree("dense", train={"checkpoint_every_steps": 0})
    _train(tree, tmp_path / "reference")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt) as interruption:
        _signalling_trainer(tree, run, 3, [signum]).fit()
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    name = signal.Signals(signum).name
    assert f"stopped by {name} after step 4 of 12" in str(interruption.value)
    entries = CheckpointStore(run / "checkpoints").entries()
    assert [e["step"] for e in entries] == [4] and entries[0]["file"] in str(interruption.value)
    Trainer(recipe_from_dict(tree), run).fit(resume=True)
    assert_same_state(trained_state(final_state(run)), trained_state(final_state(tmp_path / "reference")))


def test_second_signal_stops_at_once(tmp_path, monkeypatch):
    """A second Ctrl-C does not wait for the step boundary: no checkpoint of the current step is written.
    Within ``REPEAT_WINDOW_S`` of the first (a launcher forwarding the terminal's Ctrl-C) it is the same stop.
    """
    tree = tiny_tree("dense", train={"checkpoint_every_steps": 1})
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    with pytest.raises(KeyboardInterrupt, match="stopped by SIGINT after step 4 of 12"):
        _signalling_trainer(tree, tmp_path / "forwarded", 3, [signal.SIGINT, signal.SIGINT]).fit()
    assert max(e["step"] for e in CheckpointStore(tmp_path / "forwarded" / "checkpoints").entries()) == 4
    monkeypatch.setattr(trainer_module, "REPEAT_WINDOW_S", 0.0)
    run = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt, match="second signal"):
        _signalling_trainer(tree, run, 3, [signal.SIGINT, signal.SIGINT]).fit()
    assert {s: signal.getsignal(s) for s in handlers} == handlers
    assert max(e["step"] for e in CheckpointStore(run / "checkpoints").entries()) == 3


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_sweep_exits_130_with_one_line(signum, tmp_path):
    """Other commands stop on SIGINT/SIGTERM with exit 130 and one line, no traceback."""
    run = tmp_path / "run"
    _train(tiny_tree("dense", train={"max_steps": 2}), run)
    # Many levels, so that the signal lands mid-sweep however late a loaded machine lets this test send it.
    levels = [f"{i / 100:g}" for i in range(2, 100, 2)]
    child = start_slimtrain(["sweep", str(run), "--latency", "--levels", *levels])
    err = signal_when(child, lambda: (run / "sweep-unstructured.json").exists(), signum)
    assert child.returncode == EXIT_INTERRUPTED, err
    assert err.strip() == (
        f"slimtrain sweep: stopped by {'SIGINT (Ctrl-C)' if signum == signal.SIGINT else 'SIGTERM'}; "
        "run the same command again to continue"
    )


# -- tracebacks only with --debug ---------------------------------------------------------------------------
def test_debug_shows_the_traceback_of_user_errors(tmp_path, capsys):
    """A user error prints one line; ``slimtrain --debug`` adds the traceback, with the same exit code."""
    recipe = write_recipe(tiny_tree("dense", train={"epochz": 1}), tmp_path / "r.yaml")
    assert main(["train", str(recipe)]) == EXIT_BAD_INPUT
    assert "Traceback" not in capsys.readouterr().err
    assert main(["--debug", "train", str(recipe)]) == EXIT_BAD_INPUT
    err = capsys.readouterr().err
    assert "Traceback" in err and "RecipeError" in err and "train.epochz" in err


_WARNING_COMMAND = """
import sys, warnings
import slimtrain.experiments.report as report
from slimtrain.cli import main

def warning(directory, **kwargs):
    warnings.warn("the factorized layer is\\nnot cheaper", UserWarning, stacklevel=1)
    return directory

report.write_report = warning
if sys.argv[2:] == ["recorded"]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main(["report", sys.argv[1]])
    print([str(w.message) for w in caught])
else:
    main([*sys.argv[2:], "report", sys.argv[1]])
"""


@pytest.mark.parametrize("mode", ["plain", "--debug", "recorded"])
def test_warnings_print_as_one_line_naming_the_command(tmp_path, mode):
    """A warning during a command is one line naming the command and its category (no file or source line);
    ``--debug`` leaves it to Python's form, and a caller recording warnings still records it.
    """
    env = {**os.environ, "PYTHONPATH": f"{SOURCE}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    argv = [sys.executable, "-c", _WARNING_COMMAND, str(tmp_path), *([mode] if mode != "plain" else [])]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    warning = "slimtrain report: warning: the factorized layer is not cheaper (UserWarning)"
    if mode == "plain":
        assert done.stderr.splitlines() == [warning], done.stderr
    elif mode == "--debug":
        assert done.stderr.startswith("<string>:7: UserWarning: the factorized layer is\n"), done.stderr
    else:
        assert done.stderr == "" and "['the factorized layer is\\nnot cheaper']" in done.stdout, done


def test_a_closed_output_pipe_ends_the_command_quietly():
    """``slimtrain list | head -0``: the reader is gone before the first line; no error, no traceback."""
    child = start_slimtrain(["list"])
    child.stdout.close()  # before the child writes: its first write fails with EPIPE
    err = child.stderr.read()
    assert child.wait(timeout=120) == EXIT_OK, err
    assert err == ""


def test_unexpected_error_is_one_line_pointing_to_debug(tmp_path, capsys, monkeypatch):
    """A bug (not a slimtrain error) prints "internal error: ..." and the --debug hint, exit 1."""

    def broken(directory, **kwargs):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(report_module, "write_report", broken)
    assert main(["report", str(tmp_path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "slimtrain report: internal error: ZeroDivisionError: division by zero "
        "(rerun as `slimtrain --debug report ...` for the traceback, and report it)"
    ]
    assert main(["--debug", "report", str(tmp_path)]) == EXIT_FAILED
    err = capsys.readouterr().err
    assert "Traceback" in err and 'raise ZeroDivisionError("division by zero")' in err
