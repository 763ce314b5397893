import torch
import torch.nn.utils.prune as prune

from slimtrain.metrics import layer_table


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
