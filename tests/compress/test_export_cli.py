"""`slimtrain export` → `slimtrain.load`: the model on disk computes the compressed model's function."""

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import slimtrain
from slimtrain.cli import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK, main
from slimtrain.compress import (
    ExportFormatError,
    SparseLinear,
    SVDConv2d,
    apply_channel_masks,
    check_same_outputs,
    export_lowrank_layers,
    filter_pruning_plan,
    removable_channels,
    remove_zero_channels,
    to_exported,
)
from slimtrain.compress.torch_pruning_adapter import coupled_channel_groups
from slimtrain.experiments.sweeping import load_trained, sweep
from slimtrain.lowrank import convert_to_lowrank
from slimtrain.models import create_model

RUN = {
    "data": {"name": "digits"},
    "train": {"epochs": 1, "batch_size": 64, "max_steps": 3, "progress": False},
}


def _train(root, name, model):
    recipe = root / f"{name}.yaml"
    recipe.write_text(yaml.safe_dump({**RUN, "name": name, "output_dir": str(root), "model": model}))
    assert main(["train", str(recipe)]) == EXIT_OK
    return root / name


@pytest.fixture(scope="module")
def resnet_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs"), "r8", {"name": "resnet8", "kwargs": {"shortcut": "B"}})


@pytest.fixture(scope="module")
def mlp_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs"), "mlp", {"name": "mlp", "kwargs": {"widths": [32]}})


def _compressed(run, structure, level):
    comp = load_trained(run)
    example = comp.splits.test.inputs[:2]
    model = comp.method.compress(copy.deepcopy(comp.model), structure, level, example).eval()
    return model, comp.splits.test.inputs[:100], comp.model


def _export(run, out, *args):
    return main(["export", str(run), "--output", str(out), "--latency-batch-sizes", *args])


@pytest.mark.parametrize("structure", ["unstructured", "filter", "lowrank"])
def test_export_cli_load_equals_compressed(resnet_run, tmp_path, structure, capsys):
    """For every structure, `slimtrain.load` of the export computes the compressed model's outputs, and the
    manifest records the recipe and the base model; filter and lowrank store fewer parameters than dense.
    """
    out = tmp_path / structure
    assert _export(resnet_run, out, "--level", "0.5", "--structure", structure) == EXIT_OK
    assert "exported" in capsys.readouterr().out
    loaded = slimtrain.load(out)
    compressed, inputs, dense = _compressed(resnet_run, structure, 0.5)
    check_same_outputs(compressed, loaded, inputs)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["base_model"]["registry_name"] == "resnet8"
    assert manifest["base_model"]["kwargs"]["shortcut"] == "B"
    assert manifest["recipe"]["name"] == "r8"
    assert manifest["extra"]["structure"] == structure and manifest["extra"]["level"] == 0.5
    stored = sum(p.numel() for p in loaded.parameters())
    dense_count = sum(p.numel() for p in dense.parameters())
    if structure == "unstructured":
        assert stored == dense_count
    else:
        assert stored < 0.75 * dense_count
    if structure == "lowrank":
        assert any(isinstance(m, SVDConv2d) for m in loaded.modules())


def test_export_cli_round_to_gives_multiples_and_same_function(resnet_run, tmp_path):
    """With --round-to 8 every thinned conv keeps a multiple of 8 channels (or its full width) and the
    function is still the compressed model's.
    """
    out = tmp_path / "rounded"
    assert _export(resnet_run, out, "--level", "0.7", "--structure", "filter", "--round-to", "8") == EXIT_OK
    loaded = slimtrain.load(out)
    compressed, inputs, dense = _compressed(resnet_run, "filter", 0.7)
    check_same_outputs(compressed, loaded, inputs)
    widths = {n: m.out_channels for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
    thinned = {n: m.out_channels for n, m in loaded.named_modules() if isinstance(m, nn.Conv2d)}
    assert any(thinned[n] < widths[n] for n in widths)
    assert all(thinned[n] % 8 == 0 or thinned[n] == widths[n] for n in widths)


def test_export_cli_onnx_round_trip(resnet_run, tmp_path):
    """model.onnx run by onnxruntime on a batch of another size equals the reloaded PyTorch model."""
    import onnxruntime

    out = tmp_path / "onnx"
    assert _export(resnet_run, out, "--level", "0.5", "--structure", "filter", "--onnx") == EXIT_OK
    loaded = slimtrain.load(out)
    _, inputs, _ = _compressed(resnet_run, "filter", 0.5)
    session = onnxruntime.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    batch = inputs[:7].numpy()
    actual = session.run(None, {session.get_inputs()[0].name: batch})[0]
    with torch.no_grad():
        expected = loaded(inputs[:7]).numpy()
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-4)


def test_export_cli_csr_for_unstructured_mlp(mlp_run, tmp_path):
    """--csr stores the pruned linears as CSR; the reloaded model still equals the compressed one."""
    out = tmp_path / "csr"
    assert _export(mlp_run, out, "--level", "0.8", "--structure", "unstructured", "--csr") == EXIT_OK
    loaded = slimtrain.load(out)
    assert any(isinstance(m, SparseLinear) for m in loaded.modules())
    compressed, inputs, _ = _compressed(mlp_run, "unstructured", 0.8)
    check_same_outputs(compressed, loaded, inputs)


def test_export_cli_refuses_corrupted_files(resnet_run, tmp_path, capsys):
    """A flipped byte in the weights or a broken manifest is refused by `slimtrain.load` with
    ExportFormatError naming the file, and by `slimtrain inspect` with exit code 1; a missing directory
    is bad input (exit code 2).
    """
    out = tmp_path / "ok"
    assert _export(resnet_run, out, "--level", "0.3", "--structure", "unstructured") == EXIT_OK
    assert main(["inspect", str(out)]) == EXIT_OK
    weights = out / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ExportFormatError, match="checksum mismatch"):
        slimtrain.load(out)
    capsys.readouterr()
    assert main(["inspect", str(out)]) == EXIT_FAILED
    assert "model.safetensors" in capsys.readouterr().err

    (out / "manifest.json").write_text("{not json")
    assert main(["inspect", str(out)]) == EXIT_FAILED
    assert "manifest.json" in capsys.readouterr().err
    assert main(["inspect", str(tmp_path / "absent")]) == EXIT_BAD_INPUT


def test_export_cli_exit_codes_for_bad_requests(resnet_run, mlp_run, tmp_path, capsys):
    """A level outside [0, 1) and filter pruning of a model whose channels cannot be followed are bad input
    (2); an existing output without --overwrite and an unfinished run are failures (1), each with a message.
    """
    with pytest.raises(SystemExit) as exit_info:
        _export(resnet_run, tmp_path / "x", "--level", "1.5")
    assert exit_info.value.code == EXIT_BAD_INPUT
    out = tmp_path / "twice"
    assert _export(resnet_run, out, "--level", "0.2", "--structure", "unstructured") == EXIT_OK
    capsys.readouterr()
    assert _export(resnet_run, out, "--level", "0.2", "--structure", "unstructured") == EXIT_FAILED
    assert "--overwrite" in capsys.readouterr().err
    assert _export(resnet_run, out, "--level", "0.2", "--structure", "unstructured", "--overwrite") == EXIT_OK
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "recipe.yaml").write_text((mlp_run / "recipe.yaml").read_text())
    assert _export(unfinished, tmp_path / "u", "--level", "0.5") == EXIT_FAILED
    assert "no final checkpoint" in capsys.readouterr().err
    zero_padding = _train(tmp_path, "r8a", {"name": "resnet8", "kwargs": {"shortcut": "A"}})
    capsys.readouterr()
    assert _export(zero_padding, tmp_path / "a", "--level", "0.5", "--structure", "filter") == EXIT_BAD_INPUT
    assert "shortcut" in capsys.readouterr().err


def test_export_cli_sweep_latency_times_the_exported_model(resnet_run):
    """`sweep --latency` rows say the latency is the exported model's, which stores fewer parameters
    than the masked model's dense tensors, with finite latencies and speed-ups.
    """
    rows = sweep(resnet_run, structure="filter", levels=[0.5], latency=True, latency_batch_sizes=(1, 4))
    row = rows[0]
    assert row["latency_model_state"] == "exported"
    assert row["params_stored_exported_all"] < row["params_dense_all"]
    for batch in (1, 4):
        assert row[f"latency_ms_b{batch}"] > 0 and np.isfinite(row[f"measured_speedup_b{batch}"])


@pytest.mark.parametrize("conv", ["tucker", "matrix"])
def test_export_cli_lowrank_training_layers_kept_at_their_ranks(conv):
    """TDLRT/DLRT training layers become export modules of the same ranks computing the same function
    (float64), so a rank-adaptively trained model exports without re-decomposition.
    """
    model = create_model("resnet8", num_classes=10, in_channels=1, image_size=8, shortcut="B").double()
    layers = convert_to_lowrank(model, conv=conv, rank_fraction=0.3)
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    exported = to_exported(model.eval(), "native", x)
    check_same_outputs(model, exported, x, rtol=1e-10, atol=1e-12)
    for name, layer in layers.items():
        module = exported.get_submodule(name)
        rank = module.rank if hasattr(module, "rank") else (module.rank_out, module.rank_in)
        assert rank == (min(layer.ranks) if conv == "matrix" else layer.ranks[:2])
    assert export_lowrank_layers(exported) is not exported


def test_export_cli_removable_channels_read_from_weights():
    """A channel whose consumers read it with zero weights is removable even when its producers are not
    zero; a channel whose BatchNorm shift β is non-zero and whose consumers read it is not.
    """
    model = create_model("lenet5", num_classes=10, in_channels=1, image_size=8).eval()
    x = torch.randn(2, 1, 8, 8)
    group = coupled_channel_groups(model, x)[0]
    with torch.no_grad():
        for member in group.members:
            module = model.get_submodule(member.module)
            if member.dim == "in":
                module.weight[:, list(member.indices[:1])] = 0  # nobody reads root channel 0
    assert removable_channels(model, group) == [0]
    thinned = remove_zero_channels(model, x)
    check_same_outputs(model, thinned, x)


@pytest.mark.parametrize("fraction", [0.25, 0.5, 0.75])
def test_export_cli_filter_export_removes_exactly_the_masked_channels(fraction):
    """Exporting a filter-masked model removes exactly the plan's channels: every group of the export has
    the width the plan keeps, and the function is the masked model's.
    """
    model = create_model("resnet8", num_classes=10, in_channels=1, image_size=8, shortcut="B").eval()
    x = torch.randn(4, 1, 8, 8)
    plan = filter_pruning_plan(model, fraction, x)
    masked = apply_channel_masks(model, plan)
    exported = to_exported(masked, "filter", x)
    check_same_outputs(masked, exported, x)
    for selection in plan.selections:
        root = exported.get_submodule(selection.group.root)
        assert root.out_channels == selection.group.size - len(selection.pruned)
