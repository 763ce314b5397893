"""CSR linear layers: same function as the dense layer, only non-zeros stored."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from slimtrain.compress import global_magnitude_prune, to_sparse_linear
from slimtrain.errors import UnsupportedModelError
from slimtrain.layers import SparseLinear

from .toy_models import build, example_input


@settings(max_examples=15)
@given(st.floats(0.0, 1.0), st.booleans(), st.sampled_from([(5,), (2, 3)]))
def test_sparse_linear_equals_dense(sparsity, bias, batch_shape):
    """SparseLinear(x) == Linear(x) for any sparsity and leading batch shape; nnz = number of non-zeros."""
    linear = nn.Linear(7, 4, bias=bias).double()
    with torch.no_grad():
        linear.weight[torch.rand_like(linear.weight) < sparsity] = 0
    sparse = SparseLinear.from_linear(linear)
    x = torch.randn(*batch_shape, 7, dtype=torch.float64)
    torch.testing.assert_close(sparse(x), linear(x))
    assert sparse.nnz == int((linear.weight != 0).sum()) == sparse.values.numel()
    torch.testing.assert_close(sparse.to_dense().weight, linear.weight)


def test_to_sparse_linear_on_pruned_mlp():
    """Converting the linears of a pruned MLP keeps its outputs; min_sparsity selects layers."""
    model = global_magnitude_prune(build("mlp"), 0.9)
    x = example_input()
    sparse = to_sparse_linear(model)
    assert sum(isinstance(m, SparseLinear) for m in sparse.modules()) == 3
    torch.testing.assert_close(sparse(x), model(x))
    assert sum(isinstance(m, SparseLinear) for m in to_sparse_linear(model, min_sparsity=0.99).modules()) == 0
    with pytest.raises(UnsupportedModelError, match=r"'net\.0' \(Flatten\)"):
        to_sparse_linear(model, ["net.0"])
