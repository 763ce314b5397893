"""Tests of the NN-BCD sweep: monotone Φ, copies, memory refusal, monitoring (spec nnbcd.md §7.3, 6, 9)."""

import dataclasses
import itertools
import math
import warnings

import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from slimtrain.bcd import (
    NNBCD,
    CompressedCopy,
    FullBatchMemoryError,
    Im2colConv,
    NNBCDConfig,
    ObjectiveIncreaseWarning,
    PrunedCopy,
    TensorTrainCopy,
    estimate_full_batch_bytes,
    hard_threshold,
    max_full_batch_samples,
)

DT = torch.float64


def _data(n=40, d=8, k=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=gen, dtype=DT), torch.randint(0, k, (n,), generator=gen)


def _assert_monotone(history, rtol=1e-10):
    blocks = [block for record in history for block in record.blocks]
    for (_, before), (name, after) in itertools.pairwise(blocks):
        assert after <= before + rtol * abs(before), f"Φ rose at block {name}: {before} -> {after}"
    assert all(not r.increased_terms for r in history)


@pytest.mark.parametrize(
    "compression",
    [
        pytest.param(lambda: {}, id="dense"),
        pytest.param(lambda: {0: PrunedCopy(0.7), 1: PrunedCopy(0.5)}, id="pruned-separate"),
        pytest.param(
            lambda: {0: TensorTrainCopy((2, 4, 4, 4), 2), 1: TensorTrainCopy((4, 4, 4, 4), 2)},
            id="tt-safeguard",
        ),
    ],
)
def test_objective_non_increasing_after_every_block(compression):
    """With separate pruned copies, or TT copies with the safeguard, Φ never rises after any block update."""
    x, y = _data()
    solver = NNBCD([8, 16, 16, 3], tau=2.0, compression=compression(), trace_blocks=True)
    solver.setup(x, y)
    start = solver.objective().total
    with warnings.catch_warnings():
        warnings.simplefilter("error", ObjectiveIncreaseWarning)
        history = [solver.sweep() for _ in range(6)]
    assert history[0].blocks[0][1] <= start * (1 + 1e-10)
    assert [name for name, _ in history[0].blocks][:3] == ["V[2]", "U[2]", "W[2]"]
    _assert_monotone(history)
    assert history[-1].objective.total < start


class _UncachedNNBCD(NNBCD):
    """NN-BCD that computes every product W_iV_{i−1} afresh."""

    def _linear_map(self, index, weight):
        self._linear_maps.clear()
        return super()._linear_map(index, weight)


@pytest.mark.parametrize("conv", [False, True], ids=["mlp", "conv"])
def test_reused_products_equal_fresh_ones(conv):
    """Reusing the products W_iV_{i−1} changes nothing: Φ after every block and the final blocks are
    exactly those of a solver that recomputes every product.
    """
    if conv:
        gen = torch.Generator().manual_seed(0)
        data = torch.rand(12, 1, 9, 9, generator=gen, dtype=DT), torch.randint(0, 3, (12,), generator=gen)
        layer = Im2colConv(1, 4, (9, 9))
        widths, compression = [layer.out_features, 12, 3], {1: (4, 4, 4, 4, 3)}
    else:
        data, layer = _data(), None
        widths, compression = [8, 16, 16, 3], {0: (2, 4, 4, 4)}
    runs = []
    for cls in (NNBCD, _UncachedNNBCD):
        copies = {i: TensorTrainCopy(modes, 2) for i, modes in compression.items()}
        solver = cls(widths, conv=layer, tau=2.0, compression=copies, trace_blocks=True)
        solver.setup(*data)
        runs.append((solver, [solver.sweep().blocks for _ in range(3)]))
    (cached, cached_trace), (fresh, fresh_trace) = runs
    assert cached_trace == fresh_trace
    for key in ("weights", "preactivations", "activations"):
        for a, b in zip(getattr(cached, key), getattr(fresh, key), strict=True):
            assert torch.equal(a, b), key


def test_conv_first_layer_sweep_is_monotone_and_exports():
    """With an im2col first conv, Φ is non-increasing per block; the exported network matches the solver.

    The exported Conv2d network reproduces the solver's reported training accuracy.
    """
    conv = Im2colConv(in_channels=1, out_channels=3, image_size=(7, 7))
    gen = torch.Generator().manual_seed(1)
    images = torch.rand(30, 1, 7, 7, generator=gen, dtype=DT)
    labels = torch.randint(0, 3, (30,), generator=gen)
    solver = NNBCD(
        [conv.out_features, 12, 3],
        conv=conv,
        compression={1: TensorTrainCopy((4, 3, 3, 3, 3), 3)},
        tau=1.0,
        trace_blocks=True,
        init="normal",
        init_scale=0.1,
    )
    history = solver.fit(images, labels, 4)
    _assert_monotone(history)
    module = solver.to_module()
    assert isinstance(module[0], nn.Conv2d)
    with torch.no_grad():
        predicted = module(images).argmax(1)
    assert history[-1].train_accuracy == pytest.approx(float((predicted == labels).double().mean()))


def test_separate_pruned_copy_leaves_weight_dense_and_in_place_aliases():
    """Separate-copy mode never thresholds W (W̃ = H_s(W) apart); in-place mode keeps W == W̃ (spec §5)."""
    x, y = _data()
    separate = NNBCD([8, 16, 16, 3], tau=1.0, compression={0: PrunedCopy(0.75)})
    separate.fit(x, y, 2)
    w = separate.weights[0]
    assert int(torch.count_nonzero(w)) == w.numel()
    assert torch.equal(separate.copies[0].matrix, hard_threshold(w, 0.75))
    assert separate.objective().compression > 0

    in_place = NNBCD([8, 16, 16, 3], tau=1.0, compression={0: PrunedCopy(0.75, in_place=True)})
    in_place.fit(x, y, 2)
    assert torch.equal(in_place.weights[0], in_place.copies[0].matrix)
    assert int(torch.count_nonzero(in_place.weights[0])) == 32
    assert in_place.objective().compression == 0


def test_export_uses_compressed_copies():
    """The exported module computes the forward pass with 𝒯(G) and W̃, never the raw W (spec §2.7)."""
    x, y = _data()
    copies = {0: TensorTrainCopy((2, 4, 4, 4), 2), 1: PrunedCopy(0.5)}
    solver = NNBCD([8, 16, 16, 3], tau=1.0, compression=copies)
    solver.fit(x, y, 2)
    module = solver.to_module()
    h = x
    for i, w in enumerate(solver.weights):
        m = solver.copies[i].matrix if i in solver.copies else w
        h = h @ m.T
        h = h.clamp_min(0) if i < 2 else h
    with torch.no_grad():
        assert torch.allclose(module(x), h, atol=1e-12)
    assert type(module[1]).__name__ == "TTLinear"
    assert int(torch.count_nonzero(module[3].weight)) == 128


class _DriftingCopy(CompressedCopy):
    """A deliberately bad copy that moves away from W at every update."""

    def check_shape(self, shape, layer):
        pass

    def reset(self, weight):
        self._m = weight.clone()

    def update(self, weight):
        self._m = self._m + 10.0
        return weight

    @property
    def matrix(self):
        return self._m

    def to_module(self):
        return nn.Linear(1, 1)

    def stored_parameter_count(self):
        return 0

    def state_dict(self):
        return {"matrix": self._m}

    def load_state_dict(self, state):
        self._m = state["matrix"]


def test_objective_rise_is_warned_with_the_term_that_rose():
    """If a copy step raises Φ, the sweep warns and its record names the compression term first."""
    x, y = _data()
    solver = NNBCD([8, 16, 16, 3], tau=1.0, compression={0: _DriftingCopy()})
    solver.setup(x, y)
    with pytest.warns(ObjectiveIncreaseWarning, match="compression"):
        record = solver.sweep()
    assert record.increased_terms[0] == "compression"


def test_memory_estimate_refuses_with_largest_fitting_n():
    """A budget below the estimate raises FullBatchMemoryError quoting the largest N whose estimate fits."""
    widths = [8, 16, 16, 3]
    budget = estimate_full_batch_bytes(widths, 25, DT) + 1
    fits = max_full_batch_samples(widths, budget, DT)
    assert fits == 25
    assert estimate_full_batch_bytes(widths, fits + 1, DT) > budget
    x, y = _data(n=40)
    solver = NNBCD(widths, memory_budget_bytes=budget)
    with pytest.raises(FullBatchMemoryError, match="largest N that fits is 25"):
        solver.setup(x, y)
    assert estimate_full_batch_bytes(widths, 10, torch.float32) * 2 == estimate_full_batch_bytes(
        widths, 10, DT
    )


def test_bad_configuration_names_the_culprit():
    """Compressing the output layer, mismatched modes and out-of-range labels raise clear errors."""
    with pytest.raises(ValueError, match="output layer"):
        NNBCD([8, 16, 3], compression={1: PrunedCopy(0.5)})
    with pytest.raises(ValueError, match="layer 0: TT modes"):
        NNBCD([8, 16, 3], compression={0: TensorTrainCopy((2, 2), 2)})
    with pytest.raises(ValueError, match="own copy"):
        copy = PrunedCopy(0.5)
        NNBCD([8, 16, 16, 3], compression={0: copy, 1: copy})
    x, _ = _data()
    with pytest.raises(ValueError, match=r"labels must be integers in \[0, 3\)"):
        NNBCD([8, 16, 3]).setup(x, torch.full((40,), 3))


def test_digits_smoke_reaches_85_percent_with_monotone_objective():
    """Smoke (spec §7.9, sklearn digits instead of MNIST): > 85% train accuracy in 20 sweeps, Φ monotone.

    64→64→64→10 on 200 digits, γ = ρ = 0.5, α = 1, τ = 0, 0.2·Xavier-normal; Φ is non-increasing after every
    block update.
    """
    digits = load_digits()
    x = torch.tensor(digits.data[:200], dtype=DT) / 16
    y = torch.tensor(digits.target[:200])
    solver = NNBCD([64, 64, 64, 10], gamma=0.5, rho=0.5, alpha=1.0, tau=0.0, trace_blocks=True)
    history = solver.fit(x, y, 20, eval_every=20)
    _assert_monotone(history)
    assert history[-1].train_accuracy > 0.85


def test_float32_runs_and_exports_float32():
    """The float32 option keeps every block and the exported module in float32."""
    x, y = _data()
    solver = NNBCD([8, 16, 3], dtype=torch.float32)
    solver.fit(x, y, 2)
    assert all(w.dtype == torch.float32 for w in solver.weights)
    assert next(solver.to_module().parameters()).dtype == torch.float32


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_cuda():
    """On a CUDA device every block lives on the device and Φ still decreases."""
    x, y = _data()
    solver = NNBCD([8, 16, 16, 3], device="cuda", compression={0: TensorTrainCopy((2, 4, 4, 4), 2)}, tau=1.0)
    history = solver.fit(x, y, 3)
    assert solver.weights[0].is_cuda
    assert history[-1].objective.total < history[0].objective.total


def _first_sweep(solver):
    x, y = _data()
    solver.setup(x, y)
    record = solver.sweep()
    return record.objective, record.blocks, [w.clone() for w in solver.weights]


def _assert_same_sweep(a, b):
    assert a[0] == b[0] and a[1] == b[1]
    assert all(torch.equal(u, v) for u, v in zip(a[2], b[2], strict=True))


def test_config_object_and_keywords_give_the_same_first_sweep():
    """NNBCDConfig, the same options as keywords, or another config overridden by them: the same sweep."""
    options = {
        "gamma": 0.7,
        "rho": 0.4,
        "alpha": 2.0,
        "tau": 1.5,
        "init": "normal",
        "init_scale": 0.1,
        "seed": 3,
        "trace_blocks": True,
    }

    def copies():
        return {0: PrunedCopy(0.5), 1: TensorTrainCopy((4, 4, 4, 4), 2)}

    widths = [8, 16, 16, 3]
    by_config = NNBCD(widths, NNBCDConfig(**options), compression=copies())
    by_keywords = NNBCD(widths, compression=copies(), **options)
    base = NNBCDConfig(gamma=9.0, seed=11, dtype=torch.float32)
    overridden = NNBCD(widths, base, compression=copies(), dtype=DT, **options)
    assert by_config.config == by_keywords.config == overridden.config == NNBCDConfig(**options)
    expected = _first_sweep(by_config)
    _assert_same_sweep(_first_sweep(by_keywords), expected)
    _assert_same_sweep(_first_sweep(overridden), expected)
    assert expected[1], "trace_blocks reached the solver"
    default = NNBCD(widths, compression=copies())
    assert default.config == NNBCDConfig() and default.tau == 0.0 and default.dtype == DT
    assert _first_sweep(default)[0] != expected[0]  # the options do change the sweep


def test_unknown_option_is_refused_naming_it_and_the_valid_ones():
    """A misspelt option is a TypeError naming it and listing NNBCDConfig's fields."""
    with pytest.raises(TypeError, match=r"'gama'.*fields of NNBCDConfig: gamma, rho, alpha, tau, init"):
        NNBCD([8, 16, 3], gama=0.5)
    with pytest.raises(TypeError, match="'gama'"):
        NNBCD([8, 16, 3], NNBCDConfig(), gama=0.5)
    with pytest.raises(TypeError, match="config must be a NNBCDConfig"):
        NNBCD([8, 16, 3], {"gamma": 0.5})


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gamma", 0.0),
        ("rho", -1.0),
        ("alpha", math.inf),
        ("alpha", math.nan),
        ("tau", -0.1),
        ("init", "uniform"),
        ("init_scale", 0.0),
        ("dtype", torch.int64),
        ("dtype", "float32"),
        ("device", "gpu0"),
        ("seed", 1.5),
        ("memory_budget_bytes", 0),
        ("memory_budget_bytes", 1.5),
        ("trace_blocks", "yes"),
    ],
)
def test_invalid_field_values_are_refused_naming_the_field(field, value):
    """An invalid value raises ValueError naming the field: at construction, in replace, as a keyword."""
    pattern = rf"NNBCDConfig\.{field}="
    with pytest.raises(ValueError, match=pattern):
        NNBCDConfig(**{field: value})
    with pytest.raises(ValueError, match=pattern):
        dataclasses.replace(NNBCDConfig(), **{field: value})
    with pytest.raises(ValueError, match=pattern):
        NNBCD([8, 16, 3], **{field: value})


def test_config_is_frozen_and_round_trips_through_asdict():
    """The config cannot change in place; asdict gives every field; rebuilding gives an equal config."""
    config = NNBCDConfig(gamma=5.0, tau=0.1, init="normal", dtype=torch.float32, device="cpu", seed=2)
    assert config.device == torch.device("cpu")  # a device string is stored as the torch.device
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.gamma = 1.0  # type: ignore[misc]
    plain = dataclasses.asdict(config)
    assert list(plain) == [f.name for f in dataclasses.fields(NNBCDConfig)]
    assert NNBCDConfig(**plain) == config
    assert NNBCDConfig(**dataclasses.asdict(NNBCDConfig())) == NNBCDConfig()
