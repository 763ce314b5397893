"""Models called as their users call them: tensor, tuple or dict inputs; outputs compared as pytrees."""

import dataclasses
from collections import OrderedDict
from typing import NamedTuple

import onnxruntime
import pytest
import torch
from torch import nn

from slimtrain._model_io import compare_outputs, flatten_tensors, move_inputs
from slimtrain.compress import (
    ExportMismatchError,
    OnnxMismatchError,
    apply_channel_masks,
    check_same_outputs,
    export_onnx,
    filter_pruning_plan,
    remove_channels,
)
from slimtrain.compress import filter_pruning as filter_pruning_module
from slimtrain.errors import BadInputError
from slimtrain.metrics import count_macs, measure_latency

VOCAB, WIDTH, HIDDEN, CLASSES, TOKENS = 20, 8, 16, 3, 5


class Output(OrderedDict):
    """A Mapping subclass holding the outputs, as a Hugging Face ``ModelOutput`` is."""


@dataclasses.dataclass
class DataclassOutput:
    logits: torch.Tensor
    mask_sum: torch.Tensor


class TokenClassifier(nn.Module):
    """``model(input_ids=..., attention_mask=...)`` → logits and an integer leaf, in a chosen container."""

    def __init__(self, container: str = "dict"):
        super().__init__()
        self.container = container
        self.embed = nn.Embedding(VOCAB, WIDTH)
        self.fc = nn.Linear(WIDTH, HIDDEN)
        self.head = nn.Linear(HIDDEN, CLASSES)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        mask = attention_mask.unsqueeze(-1).to(self.fc.weight.dtype)
        logits = self.head(torch.relu(self.fc(self.embed(input_ids) * mask))).mean(1)
        mask_sum = attention_mask.sum(1)
        if self.container == "tuple":
            return logits, mask_sum
        if self.container == "dataclass":
            return DataclassOutput(logits, mask_sum)
        return (dict if self.container == "dict" else Output)(logits=logits, mask_sum=mask_sum)


def _tokens(batch: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    mask = torch.ones(batch, TOKENS, dtype=torch.long)
    mask[:, -1] = 0
    return {
        "input_ids": torch.randint(0, VOCAB, (batch, TOKENS), generator=generator),
        "attention_mask": mask,
    }


def _model(container: str = "dict") -> TokenClassifier:
    torch.manual_seed(0)
    return TokenClassifier(container).eval()


def _perturbed(model: nn.Module) -> nn.Module:
    other = _model(model.container)
    other.load_state_dict(model.state_dict())
    with torch.no_grad():
        other.head.bias[0] += 0.1
    return other


@pytest.mark.parametrize("container", ["dict", "mapping", "dataclass", "tuple"])
def test_check_same_outputs_compares_every_leaf(container):
    """Keyword inputs; dict, Mapping subclass, dataclass or tuple output: equal passes, a change fails."""
    model, inputs = _model(container), _tokens()
    assert check_same_outputs(model, _model(container), inputs) == 0.0
    with pytest.raises(ExportMismatchError, match=r"logits|\[0\]"):
        check_same_outputs(model, _perturbed(model), inputs)


def test_integer_leaf_compared_exactly():
    """An integer output that differs by one fails even where a float tolerance would let it pass."""
    expected = {"logits": torch.zeros(2), "count": torch.tensor([1000000, 3])}
    actual = {"logits": torch.zeros(2), "count": torch.tensor([1000001, 3])}
    with pytest.raises(ExportMismatchError, match="count"):
        compare_outputs(expected, actual)


@pytest.mark.parametrize("output", [None, "text", (None, "x"), {"a": None}])
def test_no_tensor_compared_raises(output):
    """A model whose output holds no tensor is refused: a comparison of nothing never passes."""

    class NoTensor(nn.Module):
        def forward(self, x):
            return output

    with pytest.raises(BadInputError, match="holds no tensor"):
        check_same_outputs(NoTensor(), NoTensor(), torch.zeros(2, 3))


def test_structure_difference_raises():
    """A missing output leaf is a mismatch, not a shorter comparison."""
    with pytest.raises(ExportMismatchError, match="structure"):
        compare_outputs((torch.ones(2), torch.ones(2)), (torch.ones(2),))


class _Pair(NamedTuple):
    ids: torch.Tensor
    x: torch.Tensor


def test_move_inputs_casts_floating_tensors_only():
    """Integer and boolean inputs keep their dtype and values; only floating ones take the dtype."""
    ids = torch.tensor([[1, 2**40]])
    inputs = {
        "ids": ids,
        "mask": torch.tensor([[True, False]]),
        "small": ids.to(torch.int32),
        "pixels": torch.rand(1, 2),
        "nested": (_Pair(ids, torch.rand(1)), [torch.rand(1)]),
    }
    moved = move_inputs(inputs, "cpu", torch.float64)
    assert moved["ids"].dtype == torch.int64 and torch.equal(moved["ids"], ids)
    assert moved["mask"].dtype == torch.bool and moved["small"].dtype == torch.int32
    assert moved["pixels"].dtype == torch.float64
    pair, (last,) = moved["nested"]
    assert isinstance(pair, _Pair) and pair.ids.dtype == torch.int64 and pair.x.dtype == torch.float64
    assert last.dtype == torch.float64
    assert move_inputs(ids, dtype=torch.float16).dtype == torch.int64


def test_flatten_order_follows_pytree():
    """Leaves come in pytree order (what the ONNX graph outputs follow): mapping keys, then positions."""
    output = Output(b=torch.zeros(1), a=(torch.zeros(1), {"z": torch.zeros(1), "y": None}))
    assert [name for name, _ in flatten_tensors(output)] == ["b", "a[0]", "a[1].z"]


def test_remove_channels_verifies_mapping_outputs(monkeypatch):
    """Channel removal on keyword inputs and a Mapping output: exact, and a wrong removal is caught."""
    model, inputs = _model("mapping"), _tokens()
    plan = filter_pruning_plan(model, 0.5, inputs, include_linear=True)
    thinned = remove_channels(model, plan, inputs)
    assert thinned.fc.out_features == HIDDEN // 2
    assert check_same_outputs(apply_channel_masks(model, plan), thinned, inputs) < 1e-5
    original = filter_pruning_module.remove_channels_in_place

    def remove_then_break(result, example_inputs, selections):
        original(result, example_inputs, selections)
        with torch.no_grad():
            result.head.bias[1] += 0.1

    monkeypatch.setattr(filter_pruning_module, "remove_channels_in_place", remove_then_break)
    with pytest.raises(ExportMismatchError, match="logits"):
        remove_channels(model, plan, inputs)


def test_metrics_take_keyword_inputs():
    """count_macs and measure_latency call ``model(**inputs)``; MACs equal a hand count."""
    model, inputs = _model(), _tokens(batch=2)
    macs = count_macs(model, inputs)
    assert macs.executed == TOKENS * (WIDTH * HIDDEN + HIDDEN * CLASSES)
    assert measure_latency(model, inputs, warmup=0, iters=1).batch_size == 2


@pytest.mark.parametrize("shift_output", [None, 1])
def test_export_onnx_keyword_inputs(tmp_path, monkeypatch, shift_output):
    """Dict inputs become graph inputs; every output leaf is checked (a shift in the 2nd is refused)."""
    model, inputs = _model(), _tokens()
    if shift_output is not None:
        original_run = onnxruntime.InferenceSession.run

        def shifted_run(self, *args, **kwargs):
            outputs = original_run(self, *args, **kwargs)
            outputs[shift_output] = outputs[shift_output] + 1
            return outputs

        monkeypatch.setattr(onnxruntime.InferenceSession, "run", shifted_run)
        with pytest.raises(OnnxMismatchError, match="mask_sum"):
            export_onnx(model, inputs, tmp_path / "model.onnx")
        return
    path = export_onnx(model, inputs, tmp_path / "model.onnx")
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    other = _tokens(batch=7)  # the batch dimension is dynamic
    logits, mask_sum = session.run(None, {k: v.numpy() for k, v in other.items()})
    with torch.no_grad():
        expected = model(**other)
    torch.testing.assert_close(torch.from_numpy(logits), expected["logits"], rtol=1e-4, atol=1e-5)
    assert torch.equal(torch.from_numpy(mask_sum), expected["mask_sum"])
