import torch
import torch.nn.utils.prune as prune
from torch import nn

from slimtrain.metrics import layer_table, svd_conv_macs

from .test_macs import SVDConv


def test_layer_table_rows_and_totals(lenet5):
    """One row per tensor with shape, params, nonzeros, sparsity and MACs; the total row sums them."""
    prune.l1_unstructured(lenet5.fc1, "weight", amount=0.5)
    table = layer_table(lenet5, torch.randn(1, 1, 32, 32))
    lines = table.splitlines()
    assert lines[0].split() == ["name", "type", "shape", "params", "nonzeros", "sparsity", "MACs"]
    fc1 = next(line for line in lines if line.startswith("fc1.weight")).split()
    assert fc1 == ["fc1.weight", "Linear", "120x400", "48,000", "24,000", "50.00%", "48,000"]
    conv_bias = next(line for line in lines if line.startswith("conv1.bias")).split()
    assert conv_bias[-1] == "-"
    total = lines[-1].split()
    assert total[0] == "total" and total[1] == "61,706" and total[2] == "37,706" and total[-1] == "416,520"
    assert len(lines) == 2 + 10 + 2  # header, rule, 10 tensors, rule, total


def test_factorized_layers_get_one_row_with_executed_macs():
    """A nested factorized layer is one `factors` row with the MACs its forward runs; at the root too."""
    model = nn.Sequential(
        nn.Sequential(SVDConv(4, 6, 2, 3, padding=1)), nn.Flatten(), nn.Linear(6 * 5 * 5, 3)
    )
    x = torch.randn(2, 4, 5, 5)
    rows = {line.split()[0]: line.split() for line in layer_table(model, x).splitlines()[2:]}
    assert rows["0.0.factors"][1:4] == ["SVDConv", "2x4x3x3", "+"]  # shapes "2x4x3x3 + 6x2x1x1"
    assert rows["0.0.factors"][-1] == f"{svd_conv_macs(4, 6, 2, (3, 3), 5, 5):,}"
    assert "0.0.first.weight" not in rows
    root = layer_table(SVDConv(4, 6, 2, 3, padding=1), x).splitlines()
    assert root[2].split()[0] == "factors" and root[2].split()[-1] == rows["0.0.factors"][-1]
