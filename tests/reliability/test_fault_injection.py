"""Faults: SIGKILL at random moments, kills inside checkpoint writes and sweeps, corrupted checkpoints,
unwritable or full disks, and a data-parallel peer that dies or hangs.

Runs go through the real command line (``slimtrain.cli.main``) in forked child processes, which are killed
with SIGKILL; forking skips the interpreter start-up of ``python -m slimtrain`` but runs the same code.
Faults inside a checkpoint write are injected in the child only (by wrapping the atomic writer there), so
the engine carries no test hook.
"""

from __future__ import annotations

import errno
import json
import multiprocessing
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

import slimtrain.io.atomic as atomic_module
import slimtrain.train.checkpoint as checkpoint_module
from slimtrain.cli import main
from slimtrain.experiments.sweeping import sweep, sweep_path
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.distributed import TIMEOUT_ENV, collective_timeout_s
from slimtrain.train.method import get_method_class
from slimtrain.train.trainer import Trainer, build_run

from .tiny_runs import (
    assert_same_state,
    final_state,
    methods,
    start_cli,
    tiny_tree,
    trained_state,
    warm_up,
    write_recipe,
)


@pytest.fixture(autouse=True, scope="module")
def _warm(tmp_path_factory):
    """Pay the lazy imports once here rather than in every forked child."""
    warm_up(tmp_path_factory.mktemp("warm-up"))


KILLS_PER_METHOD = 2


def _reference(tree: dict, run_dir: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    Trainer(recipe_from_dict(tree), run_dir).fit()
    return trained_state(final_state(run_dir)), time.perf_counter() - start


def _leftovers(checkpoints: Path) -> list[Path]:
    return sorted(checkpoints.glob(".*.tmp")) if checkpoints.exists() else []


@pytest.mark.parametrize("method", methods())
def test_random_sigkills_then_resume_reach_the_uninterrupted_state(method, tmp_path):
    """A run SIGKILLed at random moments (seeded delays spread over the whole run: inside steps,
    checkpoint writes, evaluation) and restarted with ``--resume`` each time ends with bitwise the weights,
    method state (ranks, masks) and counters of an uninterrupted run.
    """
    tree = tiny_tree(method)
    expected, duration = _reference(tree, tmp_path / "reference")
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(tmp_path / "run")]
    argv.append("--resume")
    rng = random.Random(f"kills-{method}")
    for _ in range(KILLS_PER_METHOD):
        child = start_cli(argv)
        child.join(rng.uniform(0.1, 1.2) * duration)
        if child.exitcode is None:
            os.kill(child.pid, signal.SIGKILL)
        child.join()
        assert child.exitcode in (0, -signal.SIGKILL)
    child = start_cli(argv)
    child.join(120)
    assert child.exitcode == 0
    assert_same_state(trained_state(final_state(tmp_path / "run")), expected)
    assert not _leftovers(tmp_path / "run" / "checkpoints")


def test_sigkilled_python_m_slimtrain_resumes_exactly(tmp_path):
    """A real ``python -m slimtrain train`` process SIGKILLed once its manifest lists a checkpoint past
    step 4 resumes (``--resume``) to bitwise the uninterrupted final state.
    """
    # 60 steps: the kill lands mid-run however late a loaded machine lets this test send it.
    tree = tiny_tree("dense", train={"epochs": 8, "max_steps": 60})
    expected, _ = _reference(tree, tmp_path / "reference")
    run = tmp_path / "run"
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(run), "--resume"]
    source = Path(__file__).resolve().parents[2] / "src"
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    child = subprocess.Popen(
        [sys.executable, "-m", "slimtrain", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    store = CheckpointStore(run / "checkpoints")
    deadline = time.monotonic() + 120
    while child.poll() is None and time.monotonic() < deadline:
        if any(e["step"] > 4 for e in store.entries()):  # the manifest is replaced atomically
            break
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    _, err = child.communicate()
    assert child.returncode == -signal.SIGKILL, err.decode()
    assert max(e["step"] for e in store.entries()) < 60
    assert main(argv) == 0
    assert_same_state(trained_state(final_state(run)), expected)


@pytest.mark.parametrize("method", methods())
def test_checkpointed_state_reloads_to_a_bitwise_identical_model(method):
    """For every method, loading a prepared model's state into a freshly built one gives the same
    parameter memory layout and bitwise-identical outputs and gradients — what a bit-exact resume needs
    (a layout change alone reorders floating-point sums).
    """
    recipe = recipe_from_dict(tiny_tree(method))
    source, target = build_run(recipe), build_run(recipe)
    with torch.no_grad():
        for parameter in source.model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    source.method.build_optimizer(source.model)
    # The order of `Trainer._restore`: method state (may reshape layers), weights, then the optimizer.
    target.method.load_state_dict(source.method.state_dict(), target.model)
    target.model.load_state_dict(source.model.state_dict())
    target.method.build_optimizer(target.model)
    inputs = source.splits.test.inputs[:16].to(torch.float64)
    targets = source.splits.test.targets[:16]
    outputs = []
    for comp in (source, target):
        for parameter in comp.model.parameters():
            parameter.grad = None
        logits = comp.model(inputs)
        torch.nn.functional.cross_entropy(logits, targets).backward()
        outputs.append((logits.detach(), dict(comp.model.named_parameters())))
    assert torch.equal(outputs[0][0], outputs[1][0])
    for name, parameter in outputs[0][1].items():
        other = outputs[1][1][name]
        assert parameter.stride() == other.stride(), name
        assert torch.equal(parameter.grad, other.grad), name


@pytest.mark.parametrize("conv", ["tucker", "matrix"])
def test_factorized_layers_reload_with_their_layout(conv):
    """Factorized layers fresh from conversion and the same layers after a ``state_dict`` round trip have
    the same (contiguous) parameter layout and compute bitwise-identical outputs.
    """
    from slimtrain.lowrank import convert_to_lowrank

    def build():
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Conv2d(1, 4, 3), nn.Conv2d(4, 6, 3), nn.Flatten(), nn.Linear(96, 12), nn.Linear(12, 3)
        ).double()
        convert_to_lowrank(model, conv=conv, keep_first_conv_dense=False, rank_fraction=0.5)
        return model

    fresh, reloaded = build(), build()
    reloaded.load_state_dict(fresh.state_dict())
    for (name, a), b in zip(fresh.named_parameters(), reloaded.parameters(), strict=True):
        assert a.is_contiguous() and a.stride() == b.stride(), name
    inputs = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    assert torch.equal(fresh(inputs), reloaded(inputs))


def _die_mid_write(nth: int):
    """Child set-up: the ``nth`` checkpoint file write stops half-way with SIGKILL."""

    def setup():
        real, calls = atomic_module.atomic_write, [0]

        def write_bytes(path, data):
            calls[0] += 1
            if calls[0] != nth:
                return real(path, lambda handle: handle.write(data))

            def half_then_die(handle):
                handle.write(data[: len(data) // 2])
                handle.flush()
                os.kill(os.getpid(), signal.SIGKILL)

            real(path, half_then_die)

        checkpoint_module.atomic_write_bytes = write_bytes

    return setup


def _die_before_rename(nth: int):
    """Child set-up: SIGKILL after the ``nth`` temporary file is complete and synced, before its rename."""

    def setup():
        real_replace, calls = os.replace, [0]

        def replace(src, dst):
            calls[0] += 1
            if calls[0] == nth:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        atomic_module.os.replace = replace

    return setup


def _die_before_manifest(nth: int):
    """Child set-up: SIGKILL once the ``nth`` checkpoint file is in place, before the manifest lists it."""

    def setup():
        real, calls = checkpoint_module.atomic_write_text, [0]

        def write_text(path, text):
            if Path(path).name == "manifest.json":
                calls[0] += 1
                if calls[0] == nth:
                    os.kill(os.getpid(), signal.SIGKILL)
            real(path, text)

        checkpoint_module.atomic_write_text = write_text

    return setup


@pytest.mark.parametrize(
    "fault", [_die_mid_write(5), _die_before_rename(9), _die_before_manifest(4)], ids=lambda f: f.__qualname__
)
def test_kill_inside_a_checkpoint_write_loses_nothing(fault, tmp_path):
    """Killed inside a checkpoint write (half-written temporary file; complete but not renamed; renamed but
    not yet in the manifest), the manifest still names only complete, verifying files; ``--resume`` reaches
    the uninterrupted state and removes the debris.
    """
    tree = tiny_tree("dense")
    expected, _ = _reference(tree, tmp_path / "reference")
    run = tmp_path / "run"
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(run), "--resume"]
    child = start_cli(argv, fault)
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    store = CheckpointStore(run / "checkpoints")
    for entry in store.entries():
        assert store._verify(store.directory / entry["file"], entry) is None, entry
    assert main(argv) == 0
    assert_same_state(trained_state(final_state(run)), expected)
    assert not _leftovers(run / "checkpoints")
    listed = {e["file"] for e in store.entries()}
    assert {p.name for p in (run / "checkpoints").glob("*.pt")} == listed


def test_resuming_a_finished_run_does_not_finalize_twice(tmp_path, monkeypatch):
    """``--resume`` of a run killed after its final checkpoint (before or after ``results.json``) restores
    the final checkpoint and does not run the method's end-of-training ``finalize`` again (which, for
    methods that prune or truncate at the end, would apply it twice); the final state is unchanged.
    """
    tree = tiny_tree("dense")
    run = tmp_path / "run"
    Trainer(recipe_from_dict(tree), run).fit()
    expected = trained_state(final_state(run))
    (run / "results.json").unlink()

    def must_not_run(self, model):
        raise AssertionError("finalize ran again on finalized weights")

    monkeypatch.setattr(get_method_class("dense"), "finalize", must_not_run)
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(run), "--resume"]
    assert main(argv) == 0
    assert (run / "results.json").exists()
    assert_same_state(trained_state(final_state(run)), expected)


def _interrupted_run(tree: dict, run: Path, stop_at: int) -> None:
    """Train in-process until the step ``stop_at`` raises, leaving periodic checkpoints behind."""

    class Stop(Exception):
        pass

    trainer = Trainer(recipe_from_dict(tree), run)
    step = trainer.components.method.training_step

    def stopping(model, inputs, targets, ctx):
        if ctx.step == stop_at:
            raise Stop
        return step(model, inputs, targets, ctx)

    trainer.components.method.training_step = stopping
    with pytest.raises(Stop):
        trainer.fit()


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [_truncate, _flip_a_byte], ids=lambda f: f.__name__)
def test_corrupted_newest_checkpoint_falls_back_to_the_previous_one(damage, tmp_path, capsys):
    """A truncated or bit-flipped newest checkpoint fails its manifest checksum: ``--resume`` warns naming
    it, continues from the previous good one and still ends in the uninterrupted state; when every
    checkpoint is damaged the CLI exits with status 1 naming each file.
    """
    tree = tiny_tree("dense")
    expected, _ = _reference(tree, tmp_path / "reference")
    run = tmp_path / "run"
    _interrupted_run(tree, run, stop_at=9)
    entries = CheckpointStore(run / "checkpoints").entries()
    newest = run / "checkpoints" / entries[-1]["file"]
    damage(newest)
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(run), "--resume"]
    with pytest.warns(
        UserWarning, match=f"{newest.name} is corrupted or truncated.*using .*{entries[-2]['file']}"
    ):
        assert main(argv) == 0
    assert_same_state(trained_state(final_state(run)), expected)

    run2 = tmp_path / "all-damaged"
    _interrupted_run(tree, run2, stop_at=9)
    files = [run2 / "checkpoints" / e["file"] for e in CheckpointStore(run2 / "checkpoints").entries()]
    for path in files:
        damage(path)
    capsys.readouterr()
    argv2 = ["train", str(tmp_path / "r.yaml"), "--run-dir", str(run2), "--resume"]
    assert main(argv2) == 1
    err = capsys.readouterr().err
    assert "no usable checkpoint" in err and all(path.name in err for path in files)


def test_corrupted_manifest_is_reported(tmp_path, capsys):
    """A manifest that is not valid JSON stops ``--resume`` and ``sweep`` with status 1 naming it."""
    tree = tiny_tree("dense")
    run = tmp_path / "run"
    _interrupted_run(tree, run, stop_at=4)
    manifest = run / "checkpoints" / "manifest.json"
    manifest.write_text(manifest.read_text()[:20])
    argv = ["train", str(write_recipe(tree, tmp_path / "r.yaml")), "--run-dir", str(run), "--resume"]
    assert main(argv) == 1
    assert "manifest" in capsys.readouterr().err
    assert main(["sweep", str(run)]) == 1
    assert str(manifest) in capsys.readouterr().err


def test_unwritable_output_directory_fails_before_training(tmp_path, capsys):
    """An output directory that cannot be created (its parent is a file) is refused with status 1 naming
    it, before any step runs.
    """
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    recipe = write_recipe(tiny_tree("dense"), tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(blocker / "run")]) == 1
    err = capsys.readouterr().err
    assert "not writable" in err and str(blocker / "run") in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_read_only_output_directory_fails_before_training(tmp_path, capsys):
    """A read-only output directory is refused with status 1 naming it, before any step runs."""
    run = tmp_path / "run"
    run.mkdir()
    run.chmod(0o555)
    try:
        recipe = write_recipe(tiny_tree("dense"), tmp_path / "r.yaml")
        assert main(["train", str(recipe), "--run-dir", str(run)]) == 1
    finally:
        run.chmod(0o755)
    assert "not writable" in capsys.readouterr().err
    assert not (run / "checkpoints").exists()


@pytest.mark.parametrize("target", ["checkpoint", "manifest"])
def test_disk_full_keeps_the_previous_files(target, tmp_path, monkeypatch, capsys):
    """A write that fails half-way with ENOSPC (the 4th checkpoint file, or the manifest listing it) stops the
    CLI with status 1 naming the file and the cause; the file it would have replaced is unchanged, every
    listed checkpoint verifies and no temporary file is left.
    """
    real, calls = atomic_module.atomic_write, [0]

    def full_disk(path, write):
        is_target = Path(path).name == "manifest.json" if target == "manifest" else str(path).endswith(".pt")
        calls[0] += is_target
        # the 4th checkpoint file, or the manifest listing it (the 5th write: an empty manifest comes first)
        if not (is_target and calls[0] == (5 if target == "manifest" else 4)):
            return real(path, write)

        def partial(handle):
            handle.write(b"partial")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        return real(path, partial)

    monkeypatch.setattr(atomic_module, "atomic_write", full_disk)
    run = tmp_path / "run"
    store = CheckpointStore(run / "checkpoints")
    before = {}
    real_save = store.save.__func__

    def remembering_save(self, state, step, **kwargs):
        if self.manifest_path.exists():
            before["manifest"] = self.manifest_path.read_bytes()
        return real_save(self, state, step, **kwargs)

    monkeypatch.setattr(CheckpointStore, "save", remembering_save)
    recipe = write_recipe(tiny_tree("dense"), tmp_path / "r.yaml")
    assert main(["train", str(recipe), "--run-dir", str(run)]) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err
    failed = "manifest.json" if target == "manifest" else "step-00000004.pt"
    assert f"cannot write {run / 'checkpoints' / failed}" in err
    assert store.manifest_path.read_bytes() == before["manifest"]
    entries = store.entries()
    assert [e["step"] for e in entries] == [2, 3]
    for entry in entries:
        assert store._verify(store.directory / entry["file"], entry) is None
    assert not _leftovers(run / "checkpoints")
    if target == "checkpoint":
        assert not (run / "checkpoints" / "step-00000004.pt").exists()


SWEEP_LEVELS = [0.0, 0.3, 0.6, 0.9]


def _kill_at_compress_call(method: str, call: int) -> None:
    """Child set-up: SIGKILL the process when the method's ``compress`` is called the ``call``-th time."""
    method_class = get_method_class(method)
    real_compress = method_class.compress
    calls = []

    def dying(self, *args, **kwargs):
        calls.append(None)
        if len(calls) == call:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_compress(self, *args, **kwargs)

    method_class.compress = dying


def _levels_after_training(names: list[str]) -> list[str]:
    """Methods whose runs have several levels to sweep (the others have one: the level training set)."""
    return [
        n
        for n in names
        if get_method_class(n).levels_chosen == "after_training" and get_method_class(n).structures
    ]


@pytest.mark.parametrize("method", _levels_after_training(methods()))
def test_interrupted_sweep_continues_without_redoing_levels(method, tmp_path, monkeypatch):
    """A ``slimtrain sweep`` SIGKILLed while compressing a level (the second or third, depending on the
    method), then run again, compresses only the levels that were not written and ends with the rows of an
    uninterrupted sweep; the rows file is valid JSON at every moment. A method that sets its level during
    training has one level per run, which sweep and export refuse to replace by others.
    """
    run = tmp_path / "run"
    Trainer(recipe_from_dict(tiny_tree(method, train={"checkpoint_every_steps": 0})), run).fit()
    shutil.copytree(run, tmp_path / "uninterrupted")
    kill_at = 2 + sum(map(ord, method)) % 2
    method_class = get_method_class(method)
    structure = method_class.structures[0]
    child = start_cli(
        ["sweep", str(run), "--structure", structure, "--levels", *map(str, SWEEP_LEVELS)],
        setup=lambda: _kill_at_compress_call(method, kill_at),
    )
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    rows_file = sweep_path(run, structure)
    done = [r["requested_level"] for r in json.loads(rows_file.read_text())["rows"]]
    assert done == SWEEP_LEVELS[: kill_at - 1]

    compressed_levels = []
    real_compress = method_class.compress

    def recording(self, model, structure, level, example_inputs):
        compressed_levels.append(level)
        return real_compress(self, model, structure, level, example_inputs)

    monkeypatch.setattr(method_class, "compress", recording)
    rows = sweep(run, structure=structure, levels=SWEEP_LEVELS)
    assert compressed_levels == SWEEP_LEVELS[kill_at - 1 :]
    monkeypatch.setattr(method_class, "compress", real_compress)
    reference = sweep(tmp_path / "uninterrupted", structure=structure, levels=SWEEP_LEVELS)
    for row, expected in zip(rows, reference, strict=True):
        assert {k: v for k, v in row.items() if k != "run"} == {
            k: v for k, v in expected.items() if k != "run"
        }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_rank(rank: int, port: int, tree: dict, run: str, fault: str, result: multiprocessing.Queue) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    os.environ[TIMEOUT_ENV] = "3"
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    trainer = Trainer(recipe_from_dict(tree), run)
    step = trainer.components.method.training_step

    def faulty(model, inputs, targets, ctx):
        if rank == 1 and ctx.step == 3:
            if fault == "dies":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(600)  # hangs: alive but never joins the next collective
        return step(model, inputs, targets, ctx)

    trainer.components.method.training_step = faulty
    start = time.monotonic()
    try:
        trainer.fit()
        result.put((rank, "finished", "", time.monotonic() - start))
    except Exception as err:
        result.put((rank, type(err).__name__, str(err), time.monotonic() - start))
    result.close()
    result.join_thread()  # the queue's feeder thread must flush before the hard exit
    os._exit(0)


@pytest.mark.parametrize("fault", ["dies", "hangs"])
def test_ddp_peer_that_dies_or_hangs_ends_the_other_rank(fault, tmp_path):
    """When rank 1 of a 2-process gloo run is SIGKILLed, or hangs, at step 3, rank 0 stops with a
    ``PeerLostError`` naming the failed collective and the timeout variable, within the configured
    ``SLIMTRAIN_DDP_TIMEOUT_S`` (3 s) plus slack, instead of waiting forever.
    """
    context = multiprocessing.get_context("fork")
    result = context.Queue()
    port = _free_port()
    tree = tiny_tree("dense")
    ranks = [
        context.Process(target=_ddp_rank, args=(r, port, tree, str(tmp_path / "run"), fault, result))
        for r in range(2)
    ]
    for process in ranks:
        process.start()
    try:
        rank, kind, message, seconds = result.get(timeout=60)
    finally:
        for process in ranks:
            if process.is_alive():
                os.kill(process.pid, signal.SIGKILL)
            process.join()
    assert (rank, kind) == (0, "PeerLostError")
    assert "another process died or did not answer" in message and TIMEOUT_ENV in message
    assert seconds < 30


def test_ddp_timeout_variable_is_validated(monkeypatch):
    """``SLIMTRAIN_DDP_TIMEOUT_S`` is read as seconds; a non-positive or non-numeric value is refused
    naming the variable.
    """
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert collective_timeout_s() == 2.5
    for bad in ("0", "-1", "soon", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=TIMEOUT_ENV):
            collective_timeout_s()
    monkeypatch.delenv(TIMEOUT_ENV)
    assert collective_timeout_s() == 600.0
    assert torch.get_num_threads() >= 1


def _export_argv(run: Path, out: Path, level: float, *extra: str) -> list[str]:
    # No latency measurement: the faults are in writing, not timing.
    return ["export", str(run), "--output", str(out), "--level", str(level), "--latency-batch-sizes", *extra]


def _outputs(path: Path) -> torch.Tensor:
    import slimtrain

    torch.manual_seed(0)
    model = slimtrain.load(path)
    return model(torch.randn(16, 64, dtype=next(model.parameters()).dtype))


def _kill_export_at(point: str, out: Path) -> None:
    """Child set-up: SIGKILL ``slimtrain export`` at ``point`` of writing the export directory ``out``."""
    import safetensors.torch

    import slimtrain.compress.exported_format as exported_format

    if point == "weights":
        real_save = safetensors.torch.save_file

        def half_written(state, filename, *args, **kwargs):
            real_save(state, filename, *args, **kwargs)
            data = Path(filename).read_bytes()
            Path(filename).write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)

        safetensors.torch.save_file = half_written
    elif point == "between_renames":
        real_replace = os.replace

        def replace(src, dst):
            if Path(dst) == out:
                os.kill(os.getpid(), signal.SIGKILL)
            real_replace(src, dst)

        exported_format.os.replace = replace
    else:  # "before_cleanup": the new export is in place, the previous one not yet deleted
        real_rmtree = shutil.rmtree

        def rmtree(target, *args, **kwargs):
            if Path(target).name == f".{out.name}.old":
                os.kill(os.getpid(), signal.SIGKILL)
            real_rmtree(target, *args, **kwargs)

        exported_format.shutil.rmtree = rmtree


@pytest.mark.parametrize("point", ["weights", "between_renames", "before_cleanup"])
def test_export_killed_while_overwriting_keeps_a_loadable_export(point, tmp_path):
    """``slimtrain export --overwrite`` SIGKILLed while writing the weights, between parking the previous
    export and renaming the new one into place, or before deleting the parked one: the output path then
    loads as the previous export (or, killed after the new one is in place, the new one), never a partial
    one; running the export again succeeds and leaves no hidden leftovers.
    """
    run = tmp_path / "run"
    Trainer(recipe_from_dict(tiny_tree("dense", train={"checkpoint_every_steps": 0})), run).fit()
    out = tmp_path / "exported"
    assert main(_export_argv(run, out, 0.3)) == 0
    previous = _outputs(out)
    fresh = tmp_path / "fresh"
    assert main(_export_argv(run, fresh, 0.8)) == 0
    new = _outputs(fresh)
    assert not torch.allclose(previous, new)

    child = start_cli(_export_argv(run, out, 0.8, "--overwrite"), setup=lambda: _kill_export_at(point, out))
    child.join(120)
    assert child.exitcode == -signal.SIGKILL
    expected = new if point == "before_cleanup" else previous
    assert torch.equal(_outputs(out), expected)

    assert main(_export_argv(run, out, 0.8, "--overwrite")) == 0
    assert torch.equal(_outputs(out), new)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "fresh", "run"]


def test_export_to_a_full_disk_or_unusable_path_fails_cleanly(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the weights of ``slimtrain export --overwrite`` exits 1 with the error, and
    the previous export is untouched and no temporary directory is left; an output path below a regular
    file exits 1 naming it.
    """
    import safetensors.torch

    run = tmp_path / "run"
    Trainer(recipe_from_dict(tiny_tree("dense", train={"checkpoint_every_steps": 0})), run).fit()
    out = tmp_path / "exported"
    assert main(_export_argv(run, out, 0.3)) == 0
    previous = _outputs(out)

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    capsys.readouterr()
    assert main(_export_argv(run, out, 0.8, "--overwrite")) == 1
    assert "No space left on device" in capsys.readouterr().err
    monkeypatch.undo()
    assert torch.equal(_outputs(out), previous)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exported", "run"]

    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    assert main(_export_argv(run, blocker / "exported", 0.3)) == 1
    assert "a-file" in capsys.readouterr().err
