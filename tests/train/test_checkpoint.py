"""Checkpoints: atomic, verified by checksum, falling back to the previous good one."""

import argparse

import pytest
import torch

from slimtrain.errors import CheckpointError
from slimtrain.train.checkpoint import CheckpointStore


def test_round_trip_and_retention(tmp_path):
    """The newest checkpoint loads back equal; only `keep` periodic ones stay, the final one always."""
    store = CheckpointStore(tmp_path, keep=2)
    for step in range(1, 5):
        store.save({"w": torch.full((3,), float(step)), "step": step}, step)
    store.save({"w": torch.zeros(3), "step": 9}, 9, final=True)
    files = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert files == ["final.pt", "step-00000003.pt", "step-00000004.pt"]
    state, entry = store.load_latest()
    assert entry["final"] and state["step"] == 9
    assert torch.equal(store.load_latest(final_only=True)[0]["w"], torch.zeros(3))


def test_corrupted_newest_falls_back_with_warning(tmp_path):
    """A truncated newest checkpoint is detected by its checksum; the previous one is used and named."""
    store = CheckpointStore(tmp_path)
    store.save({"step": 1}, 1)
    newest = store.save({"step": 2}, 2)
    newest.write_bytes(newest.read_bytes()[:20])
    with pytest.warns(UserWarning, match="corrupted or truncated"):
        state, entry = store.load_latest()
    assert state["step"] == 1 and entry["step"] == 1


def test_no_usable_checkpoint_is_an_error(tmp_path):
    """When every listed checkpoint is damaged, loading fails naming the files instead of starting over."""
    store = CheckpointStore(tmp_path)
    path = store.save({"step": 1}, 1)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match=r"step-00000001\.pt"):
        store.load_latest()
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="manifest"):
        store.entries()


def test_no_checkpoint_returns_none(tmp_path):
    """An empty directory has no checkpoint (a fresh run), which is not an error."""
    assert CheckpointStore(tmp_path / "absent").load_latest() is None


def test_only_tensors_and_plain_values_are_loaded(tmp_path):
    """Loading uses weights_only: a checkpoint holding an arbitrary object is refused, not unpickled."""
    store = CheckpointStore(tmp_path)
    store.save({"obj": argparse.Namespace(a=1)}, 1)
    with pytest.raises(CheckpointError, match="refused"):
        store.load_latest()


def test_a_kill_between_the_first_checkpoint_and_its_manifest_entry_starts_afresh(tmp_path, monkeypatch):
    """The first checkpoint file lands, the process dies before listing it: a resume starts from scratch
    (the unlisted file is not mistaken for a checkpoint whose manifest was lost) and the next save removes it.
    """
    import slimtrain.train.checkpoint as checkpoint_module

    store = CheckpointStore(tmp_path / "ckpt")
    real = checkpoint_module.atomic_write_text

    def dies_on_listing(path, text):
        if '"file"' in text:  # the manifest that would list the new checkpoint
            raise KeyboardInterrupt
        real(path, text)

    monkeypatch.setattr(checkpoint_module, "atomic_write_text", dies_on_listing)
    with pytest.raises(KeyboardInterrupt):
        store.save({"w": torch.ones(2)}, 1)
    monkeypatch.undo()
    assert (tmp_path / "ckpt" / "step-00000001.pt").exists()
    assert store.load_latest() is None
    store.save({"w": torch.zeros(2)}, 2)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.pt")) == ["step-00000002.pt"]
