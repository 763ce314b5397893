"""Files and directories slimtrain writes get the modes of the process umask, not mkstemp's owner-only ones.

Each test runs under umask 022 (set with ``os.umask`` and restored), where a plain ``open``/``mkdir``
creates 0644 files and 0755 directories; a colleague or a serving process must be able to read every
checkpoint, result, report and export.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

import pytest
import torch
import yaml

from slimtrain.cli import EXIT_OK, main
from slimtrain.compress import export_onnx, load_exported, save_exported
from slimtrain.io import apply_umask, atomic_write_bytes, atomic_write_text, default_mode, process_umask
from slimtrain.models import create_model
from slimtrain.train.checkpoint import CheckpointStore

FILE, DIRECTORY = 0o644, 0o755

TREE = {
    "name": "modes",
    "data": {"name": "digits"},
    "model": {"name": "mlp", "kwargs": {"widths": [16]}},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 3, "progress": False, "tensorboard": False},
    "evaluation": {"levels": [0.0, 0.5]},
}


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_below(root: Path) -> dict[str, int]:
    """Mode of ``root`` and of everything below it, by path relative to ``root``."""
    return {str(p.relative_to(root)): mode(p) for p in [root, *root.rglob("*")]}


def expected_modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): DIRECTORY if p.is_dir() else FILE for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny digits run trained, swept, reported and exported (with ONNX) under umask 022."""
    root = tmp_path_factory.mktemp("modes")
    recipe = root / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(TREE))
    run_dir = root / "run"
    with umask(0o022):
        assert main(["train", str(recipe), "--run-dir", str(run_dir)]) == EXIT_OK
        assert main(["sweep", str(run_dir)]) == EXIT_OK
        assert main(["report", str(run_dir)]) == EXIT_OK
        exported = run_dir / "exported" / "unstructured-0.5"
        args = ["export", str(run_dir), "--level", "0.5", "--output", str(exported), "--onnx"]
        assert main([*args, "--latency-batch-sizes"]) == EXIT_OK
    return run_dir


def test_process_umask_is_read_without_changing_it():
    with umask(0o027):
        assert process_umask() == 0o027
        assert default_mode(directory=False) == 0o640 and default_mode(directory=True) == 0o750
        assert os.umask(0o027) == 0o027  # unchanged by the read


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_write_follows_the_umask(tmp_path, mask, expected):
    with umask(mask):
        atomic_write_text(tmp_path / "a.txt", "x")
        atomic_write_bytes(tmp_path / "sub" / "b.bin", b"x")  # the parent is created by mkdir
    assert mode(tmp_path / "a.txt") == expected
    assert mode(tmp_path / "sub" / "b.bin") == expected
    assert mode(tmp_path / "sub") == 0o777 & ~mask


def test_apply_umask_leaves_symlinks_alone(tmp_path):
    target = tmp_path / "t"
    target.write_text("x")
    target.chmod(0o600)
    (tmp_path / "link").symlink_to(target)
    with umask(0o022):
        apply_umask(tmp_path / "link")
    assert mode(target) == 0o600


def test_checkpoints_are_readable(tmp_path):
    with umask(0o022):
        store = CheckpointStore(tmp_path / "checkpoints")
        store.save({"w": torch.zeros(2)}, 1)
        store.save({"w": torch.ones(2)}, 2, final=True)
    assert modes_below(tmp_path / "checkpoints") == expected_modes(tmp_path / "checkpoints")
    assert {"manifest.json", "final.pt", "step-00000001.pt"} <= {
        p.name for p in (tmp_path / "checkpoints").iterdir()
    }


def test_run_outputs_are_readable(run):
    """Checkpoints, results.json, recipe.yaml, logs, sweep results and the report of a CLI run."""
    names = {p.name for p in run.iterdir()}
    assert {"results.json", "recipe.yaml", "checkpoints", "report.md", "report.html"} <= names
    assert any(name.startswith("sweep-") for name in names)
    assert any(name.endswith(".png") for name in names)
    assert modes_below(run) == expected_modes(run)


def test_export_directory_and_onnx_are_readable(run):
    exported = run / "exported" / "unstructured-0.5"
    assert {p.name for p in exported.iterdir()} == {"manifest.json", "model.safetensors", "model.onnx"}
    assert modes_below(exported) == expected_modes(exported)


def test_save_exported_and_export_onnx_follow_the_umask(tmp_path):
    spec = {"num_classes": 3, "in_channels": 1, "image_size": 4, "widths": [5]}
    model = create_model("mlp", **spec).eval()
    with umask(0o027):
        path = save_exported(model, tmp_path / "out" / "mlp", base="mlp", base_kwargs=spec)
        save_exported(load_exported(path), path, base="mlp", base_kwargs=spec, overwrite=True)
        onnx_path = export_onnx(model, torch.randn(2, 1, 4, 4), tmp_path / "out" / "mlp.onnx")
    assert mode(path) == 0o750
    assert {p.name: mode(p) for p in path.iterdir()} == {"manifest.json": 0o640, "model.safetensors": 0o640}
    assert mode(onnx_path) == 0o640
