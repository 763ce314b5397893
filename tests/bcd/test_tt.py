"""Tests of TT-SVD, rank capping, TT layers and the storage fractions (spec nnbcd.md §2.4, §7.4)."""

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from slimtrain.algebra.tt import tt_ranks, tt_reconstruct, tt_storage, tt_svd, tt_svd_matrix
from slimtrain.bcd.ratio import module_storage_fractions, tt_storage_fractions
from slimtrain.layers import TTLinear

modes_strategy = st.lists(st.integers(1, 4), min_size=1, max_size=5)

MLP4_SHAPES = [(1024, 561), (1024, 1024), (1024, 1024), (512, 1024), (6, 512)]
MLP4_MODES = {0: (6, 22, 34, 2, 2, 2, 2, 2, 2, 2), 1: (4,) * 10, 2: (4,) * 10, 3: (4,) * 9 + (2,)}
CNN_SHAPES = [(9, 32), (1024, 5408), (1024, 1024), (10, 1024)]
CNN_MODES = {1: (26, 26, 4, 4, 4, 4, 4, 2, 2, 2), 2: (4,) * 10}


@settings(max_examples=25)
@given(modes=modes_strategy, seed=st.integers(0, 99))
def test_full_rank_reconstructs_exactly(modes, seed):
    """With r ≥ every unfolding size TT-SVD reconstructs the tensor to float64 precision."""
    t = torch.randn(*modes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    result = tt_svd(t, rank=math.prod(modes))
    assert torch.allclose(tt_reconstruct(result.cores), t, atol=1e-12)
    assert all(e < 1e-12 for e in result.truncation_errors)


@settings(max_examples=25)
@given(modes=modes_strategy, rank=st.integers(1, 6), seed=st.integers(0, 99))
def test_truncation_error_bound_and_rank_caps(modes, rank, seed):
    """Core ranks equal min(r, ∏_{j≤k}n_j, ∏_{j>k}n_j) and ‖T − 𝒯(G)‖ ≤ sqrt(Σ ε_k²) (Oseledets 2011)."""
    t = torch.randn(*modes, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    result = tt_svd(t, rank)
    expected = (
        [1] + [min(rank, math.prod(modes[:k]), math.prod(modes[k:])) for k in range(1, len(modes))] + [1]
    )
    assert tt_ranks(modes, rank) == expected
    assert [c.shape[0] for c in result.cores] + [1] == expected
    assert tuple(c.shape[1] for c in result.cores) == tuple(modes)
    assert sum(c.numel() for c in result.cores) == tt_storage(modes, rank)
    error = torch.linalg.norm(t - tt_reconstruct(result.cores))
    assert error <= math.sqrt(sum(e**2 for e in result.truncation_errors)) + 1e-12


def test_mlp4_storage_fractions_at_rank_80():
    """MLP4 at TT rank 80 reproduces CR₂ = 0.1668 and CR₁ = 0.1676 (spec §4)."""
    fractions = tt_storage_fractions(MLP4_SHAPES, MLP4_MODES, 80)
    assert round(fractions.compressed, 4) == 0.1668
    assert round(fractions.all, 4) == 0.1676


@pytest.mark.parametrize(
    ("rank", "cr2"), [(40, 0.0128), (80, 0.0370), (140, 0.0878), (220, 0.1784), (300, 0.2807)]
)
def test_cnn_storage_fractions(rank, cr2):
    """The CNN's compressed-layer storage fraction CR₂ matches the spec's table at every rank."""
    assert round(tt_storage_fractions(CNN_SHAPES, CNN_MODES, rank).compressed, 4) == cr2


def test_storage_fraction_rejects_mismatched_modes():
    """Modes that do not multiply to the layer size are reported with the layer index."""
    with pytest.raises(ValueError, match="layer 1"):
        tt_storage_fractions([(4, 4), (4, 4)], {1: (2, 2, 2)}, 2)


def test_tt_linear_matches_dense_and_counts():
    """TTLinear's forward equals F.linear with 𝒯(G); it counts dense in·out and stored Σ core sizes."""
    w = torch.randn(8, 6, dtype=torch.float64)
    layer = TTLinear.from_weight(w, (4, 2, 6), rank=2)
    x = torch.randn(3, 6, dtype=torch.float64)
    rebuilt = tt_reconstruct(tt_svd_matrix(w, (4, 2, 6), 2).cores).reshape(8, 6)
    assert torch.allclose(layer(x), x @ rebuilt.T)
    assert layer.dense_parameter_count() == 48
    assert layer.stored_parameter_count() == tt_storage((4, 2, 6), 2) == 1 * 4 * 2 + 2 * 2 * 2 + 2 * 6
    assert layer.ranks == (1, 2, 2, 1)
    with_bias = TTLinear(list(layer.cores), 6, 8, bias=torch.zeros(8))
    assert with_bias.dense_parameter_count() == 56


def test_module_storage_fractions_equal_hand_count():
    """An exported MLP4-shaped network (scaled down) gives the same CR₁/CR₂ as the hand count."""
    shapes = [(16, 8), (16, 16), (4, 16)]
    modes = {0: (2, 4, 4, 4), 1: (4, 4, 4, 4)}
    layers = []
    for index, (rows, cols) in enumerate(shapes):
        w = torch.randn(rows, cols)
        layers.append(
            TTLinear.from_weight(w, modes[index], 3) if index in modes else torch.nn.Linear(cols, rows)
        )
    fractions = module_storage_fractions(torch.nn.Sequential(*layers))
    assert fractions == tt_storage_fractions(shapes, modes, 3)


def test_tt_svd_matrix_names_mismatch():
    """A mode tuple of the wrong size is rejected with both sizes in the message."""
    with pytest.raises(ValueError, match="multiply to 8"):
        tt_svd_matrix(torch.zeros(3, 3), (2, 2, 2), 2)


def test_tt_network_exports_to_onnx(tmp_path):
    """A network with a TTLinear exports to ONNX and onnxruntime reproduces its outputs (to 1e-5)."""
    ort = pytest.importorskip("onnxruntime")
    model = torch.nn.Sequential(
        TTLinear.from_weight(torch.randn(16, 8), (4, 4, 8), 3),
        torch.nn.ReLU(),
        torch.nn.Linear(16, 3, bias=False),
    )
    x = torch.randn(2, 8)
    path = tmp_path / "tt.onnx"
    with warnings.catch_warnings():
        # The shape check in tt_reconstruct is a constant under tracing; the exporter warns about it.
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), dynamo=False)
    session = ort.InferenceSession(str(path))
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    assert abs(out - model(x).detach().numpy()).max() < 1e-5
