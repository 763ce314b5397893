import torch
from torch import nn

from slimtrain.metrics import measure_peak_memory


def test_cpu_training_step_peak_memory():
    """A training step adds at least the gradient and momentum buffers (2 × 4 MiB) to the loaded model.

    Measured in a child process; the caller's model is not modified.
    """
    model = nn.Sequential(nn.Linear(1024, 1024, bias=False))
    before = model[0].weight.detach().clone()
    result = measure_peak_memory(model, torch.randn(8, 1024), mode="train")
    param_bytes = 1024 * 1024 * 4
    assert result.mode == "train" and result.device == "cpu"
    assert result.baseline_bytes > param_bytes
    assert result.step_bytes >= param_bytes  # grads + momentum, less what loading already touched
    assert torch.equal(model[0].weight, before) and model[0].weight.grad is None
