"""Data kept on the training device: the same batches as the host path, for every augmentation."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from slimtrain.data import ArrayDataset, BatchLoader, fits_on_device, standard_augmentation
from slimtrain.data.transfer import to_device
from slimtrain.train.config import DataConfig

# The standard train-time recipes of the registered datasets: (name, channels, size, crop padding, flip).
AUGMENTATIONS = [
    ("none", 3, 8, 0, False),
    ("digits", 1, 8, 1, False),
    ("mnist", 1, 28, 2, False),
    ("fashion-mnist", 1, 28, 2, True),
    ("cifar", 3, 32, 4, True),
]

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _dataset(n: int, channels: int, size: int) -> ArrayDataset:
    generator = torch.Generator().manual_seed(n)
    inputs = torch.randn((n, channels, size, size), generator=generator)
    return ArrayDataset(inputs, torch.arange(n) % 10, allow_empty=True)


def _augmentation(channels: int, padding: int, flip: bool):
    return standard_augmentation(padding, flip, [0.5] * channels, [0.25] * channels)


def _batches(loader: BatchLoader, epochs: range) -> list[tuple[torch.Tensor, torch.Tensor]]:
    out = []
    for epoch in epochs:
        loader.set_epoch(epoch)
        out += [(x.cpu(), y.cpu()) for x, y in loader]
    return out


def _assert_same(got, expected) -> None:
    assert len(got) == len(expected) > 0
    for (x, y), (ex, ey) in zip(got, expected, strict=True):
        assert torch.equal(x, ex) and torch.equal(y, ey)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("on_device", [True, False, "auto"])
@pytest.mark.parametrize(("name", "channels", "size", "padding", "flip"), AUGMENTATIONS)
def test_device_paths_yield_the_host_batches(name, channels, size, padding, flip, on_device, device):
    """Data kept on the device, or gathered on the host and copied: bitwise the batches of the host path."""
    data = _dataset(45, channels, size)
    transform = _augmentation(channels, padding, flip)
    assert (transform is None) == (name == "none")
    for rank in range(2):
        options = dict(shuffle=True, seed=3, transform=transform, rank=rank, world_size=2)
        host = BatchLoader(data, 8, **options)
        placed = BatchLoader(data, 8, device=device, on_device=on_device, **options)
        got = _batches(placed, range(3))
        _assert_same(got, _batches(host, range(3)))
        # The augmentation really changed the inputs, so equality is not that of untouched samples.
        if transform is not None:
            plain = _batches(BatchLoader(data, 8, **{**options, "transform": None}), range(3))
            assert any(not torch.equal(x, p) for (x, _), (p, _) in zip(got, plain, strict=True))


@given(
    n=st.integers(1, 70),
    batch_size=st.integers(1, 16),
    world_size=st.integers(1, 3),
    shuffle=st.booleans(),
    drop_last=st.booleans(),
    on_device=st.sampled_from([True, False]),
    epoch=st.integers(0, 5),
)
def test_device_path_matches_host_path_for_any_sharding(
    n, batch_size, world_size, shuffle, drop_last, on_device, epoch
):
    """Order, sharding, the last batch and the augmentation agree between the paths on every rank."""
    data = _dataset(n, 3, 6)
    transform = _augmentation(3, 2, True)
    for rank in range(world_size):
        options = dict(
            shuffle=shuffle,
            seed=11,
            drop_last=drop_last,
            transform=transform,
            rank=rank,
            world_size=world_size,
        )
        host = _batches(BatchLoader(data, batch_size, **options), range(epoch, epoch + 1))
        placed = BatchLoader(data, batch_size, device="cpu", on_device=on_device, **options)
        got = _batches(placed, range(epoch, epoch + 1))
        assert len(got) == len(host)
        for (x, y), (hx, hy) in zip(got, host, strict=True):
            assert torch.equal(x, hx) and torch.equal(y, hy)


def test_resumed_epoch_is_bitwise_the_uninterrupted_one():
    """A fresh loader set to epoch 2 (a resumed run) yields exactly what the running loader yielded there."""
    data = _dataset(40, 3, 32)
    transform = _augmentation(3, 4, True)
    running = BatchLoader(data, 16, shuffle=True, seed=2, transform=transform, device="cpu", on_device=True)
    uninterrupted = _batches(running, range(3))[-len(running) :]
    fresh = BatchLoader(data, 16, shuffle=True, seed=2, transform=transform, device="cpu", on_device=True)
    _assert_same(_batches(fresh, range(2, 3)), uninterrupted)


def test_augmentation_draws_only_from_its_generator():
    """Iterating leaves torch's global generator untouched: every draw comes from the derived generators."""
    loader = BatchLoader(
        _dataset(30, 3, 32),
        8,
        shuffle=True,
        transform=_augmentation(3, 4, True),
        device="cpu",
        on_device=True,
    )
    state = torch.get_rng_state()
    _batches(loader, range(2))
    assert torch.equal(torch.get_rng_state(), state)


def test_kept_data_is_copied_once_and_the_decision_is_kept():
    """The dataset is placed at the first iteration and reused; "auto" keeps data already on the device."""
    data = _dataset(20, 1, 4)
    loader = BatchLoader(data, 5, shuffle=True, device="cpu")
    assert fits_on_device(data, "cpu") and loader.keeps_data_on_device
    _batches(loader, range(1))
    first = loader._resident
    _batches(loader, range(1, 3))
    assert loader._resident is first and first.inputs.data_ptr() == data.inputs.data_ptr()
    assert not BatchLoader(data, 5, shuffle=True).keeps_data_on_device  # no device: today's behaviour
    assert not BatchLoader(data, 5, shuffle=True, device="cpu", on_device=False).keeps_data_on_device


def test_host_batches_go_to_another_device():
    """Without keeping data on the device, batches are gathered on the host and copied to ``device``.

    The meta device stands in for a GPU on a machine without one: shapes, dtypes and placement are checked.
    """
    data = _dataset(20, 3, 8)
    assert not fits_on_device(data, "meta")
    loader = BatchLoader(data, 6, shuffle=True, transform=_augmentation(3, 2, True), device="meta")
    batches = list(loader)
    assert not loader.keeps_data_on_device
    assert [x.shape[0] for x, _ in batches] == [6, 6, 6, 2]
    assert all(x.device.type == y.device.type == "meta" and x.shape[1:] == (3, 8, 8) for x, y in batches)


def test_to_device_keeps_a_tensor_already_there():
    """No copy is made for a tensor on its target device."""
    t = torch.arange(4)
    assert to_device(t, torch.device("cpu")) is t


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_copies_are_staged_in_pinned_memory():
    """Host batches bound for a GPU are gathered into pinned memory; the data kept there stays there."""
    data = _dataset(32, 3, 8)
    host = BatchLoader(data, 8, shuffle=True, device="cuda", on_device=False)
    assert all(x.is_cuda for x, _ in host)
    kept = BatchLoader(data, 8, shuffle=True, device="cuda", on_device=True)
    list(kept)
    assert kept._resident.inputs.is_cuda


def test_invalid_placement_is_refused():
    """A placement that is neither a boolean nor "auto" is refused by the loader and by the recipe."""
    with pytest.raises(ValueError, match="on_device"):
        BatchLoader(_dataset(4, 1, 2), 2, shuffle=False, on_device="sometimes")
    for value in ("auto", True, False):
        assert DataConfig(on_device=value).on_device == value
    with pytest.raises(ValidationError, match="on_device"):
        DataConfig(on_device="sometimes")
