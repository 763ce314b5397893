"""Save/load of exported models: reload equals before for every structure; corrupt directories refused."""

import json
import warnings

import pytest
import torch
from torch import nn

from slimtrain.compress import (
    ExportFormatError,
    FactorizationCostWarning,
    apply_channel_masks,
    filter_pruning_plan,
    global_magnitude_prune,
    load_exported,
    read_manifest,
    remove_channels,
    save_exported,
    svd_decompose,
    to_sparse_linear,
    tucker_decompose,
)
from slimtrain.errors import FactoryImportError

from .toy_models import TinyMLP, TinyResNet, TinyVGG, build, example_input

FACTORIES = {"resnet_b": lambda: TinyResNet("B"), "vgg": TinyVGG, "mlp": TinyMLP}


def _export(name: str, structure: str) -> nn.Module:
    model = build(name, torch.float32)
    x = example_input(torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FactorizationCostWarning)
        if structure == "unstructured":
            return to_sparse_linear(global_magnitude_prune(model, 0.8))
        if structure == "filter":
            return remove_channels(model, filter_pruning_plan(model, 0.5, x, include_linear=name == "mlp"), x)
        if structure == "svd":
            return svd_decompose(model, 0.5, include_linear=True)
        return tucker_decompose(model, 0.5)


CASES = [
    ("resnet_b", "unstructured"),
    ("resnet_b", "filter"),
    ("resnet_b", "svd"),
    ("resnet_b", "tucker"),
    ("vgg", "filter"),
    ("vgg", "svd"),
    ("mlp", "unstructured"),
    ("mlp", "filter"),
]


@pytest.mark.parametrize("name,structure", CASES)
def test_reload_equals_before(tmp_path, name, structure):
    """load_exported(save_exported(m)) has the same state dict and the same outputs as m."""
    exported = _export(name, structure)
    path = save_exported(
        exported, tmp_path / "m", base=FACTORIES[name], recipe={"level": 0.5, "structure": structure}
    )
    loaded = load_exported(path, factory=FACTORIES[name])
    x = example_input(torch.float32)
    assert set(loaded.state_dict()) == set(exported.state_dict())
    for key, value in exported.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    torch.testing.assert_close(loaded(x), exported.eval()(x), rtol=0, atol=0)
    manifest = read_manifest(path)
    assert manifest["recipe"] == {"level": 0.5, "structure": structure}
    assert manifest["changes"], "an exported model differs from its base"


def test_manifest_records_kept_channels_and_types(tmp_path):
    """Thinned layers are recorded with their new shapes and the kept channel indices."""
    exported = _export("vgg", "filter")
    manifest = read_manifest(save_exported(exported, tmp_path / "m", base=TinyVGG))
    changes = {c["name"]: c for c in manifest["changes"]}
    conv = changes["features.0"]
    assert conv["type"] == "torch.nn.Conv2d" and conv["config"]["out_channels"] == 3
    assert manifest["format_version"] == 2
    assert conv["kept_channels"]["out"] == exported.features[0].slimtrain_kept_channels["out"]
    assert manifest["tensors"]["features.0.weight"]["shape"] == [3, 3, 3, 3]
    assert manifest["base_model"]["factory"].endswith(":TinyVGG")


def _saved(tmp_path):
    return save_exported(_export("mlp", "svd"), tmp_path / "m", base=TinyMLP)


def test_checksum_mismatch_refused(tmp_path):
    """A weights file changed after saving is refused, naming the file."""
    path = _saved(tmp_path)
    data = bytearray((path / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (path / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(ExportFormatError, match=r"checksum mismatch.*model\.safetensors"):
        load_exported(path, factory=TinyMLP)


@pytest.mark.parametrize(
    "edit,message",
    [
        (lambda m: m["tensors"].pop("net.1.reduce.weight"), "extra \\['net.1.reduce.weight'\\]"),
        (
            lambda m: m["tensors"].__setitem__("ghost", {"shape": [1], "dtype": "float32"}),
            "missing \\['ghost'\\]",
        ),
        (lambda m: m["changes"].pop(0), "missing|shape|extra"),
        (lambda m: m["changes"][0].__setitem__("type", "Pickled"), "unknown layer type 'Pickled'"),
        (lambda m: m.__setitem__("format_version", 99), "format_version"),
    ],
)
def test_inconsistent_manifest_refused(tmp_path, edit, message):
    """A manifest naming missing/extra tensors or unknown layer types is refused with a clear error."""
    path = _saved(tmp_path)
    manifest = json.loads((path / "manifest.json").read_text())
    edit(manifest)
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ExportFormatError, match=message):
        load_exported(path, factory=TinyMLP)


def test_unreadable_or_absent_files_refused(tmp_path):
    """Missing manifest, invalid JSON and a factory that cannot be imported are refused, naming the problem;
    an importable factory is imported from its recorded path.
    """
    with pytest.raises(ExportFormatError, match=r"manifest\.json not found"):
        load_exported(tmp_path)
    path = _saved(tmp_path)
    assert isinstance(load_exported(path), TinyMLP)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["base_model"]["factory"] = "no_such_package.models:TinyMLP"
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(FactoryImportError, match=r"no_such_package\.models:TinyMLP.*cannot be imported"):
        load_exported(path)
    assert isinstance(load_exported(path, factory=TinyMLP), TinyMLP)
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(ExportFormatError, match="not valid JSON"):
        load_exported(path, factory=TinyMLP)


def test_existing_directory_kept_unless_overwrite(tmp_path):
    """Saving onto an existing export raises; with overwrite=True it is replaced and no temp dirs remain."""
    path = _saved(tmp_path)
    exported = _export("mlp", "filter")
    with pytest.raises(FileExistsError):
        save_exported(exported, path, base=TinyMLP)
    save_exported(exported, path, base=TinyMLP, overwrite=True, manifest_extra={"note": 1})
    assert read_manifest(path)["extra"] == {"note": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]
    x = example_input(torch.float32)
    torch.testing.assert_close(load_exported(path, factory=TinyMLP)(x), exported.eval()(x))


def test_unrebuildable_change_refused_at_save(tmp_path):
    """A model whose change is not a layer replacement (unknown module type) cannot be saved."""
    model = TinyMLP()
    model.net[1] = nn.Bilinear(2, 2, 2)
    with pytest.raises(ExportFormatError, match=r"'net\.1'.*Bilinear"):
        save_exported(model, tmp_path / "m", base=TinyMLP)
    assert not (tmp_path / "m").exists()


def test_masked_structured_model_saves_without_changes(tmp_path):
    """A masked (not thinned) model has the base architecture: no changes, same weights after reload."""
    model = build("resnet_b", torch.float32)
    masked = apply_channel_masks(model, filter_pruning_plan(model, 0.5, example_input(torch.float32)))
    path = save_exported(masked, tmp_path / "m", base=FACTORIES["resnet_b"])
    assert read_manifest(path)["changes"] == []
    loaded = load_exported(path, factory=FACTORIES["resnet_b"])
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in masked.state_dict().items())


def test_reload_equals_before_for_composed_structures(tmp_path):
    """Filter pruning, SVD, Tucker, folded unstructured masks and CSR in one model survive a save/load."""
    from .test_onnx_export import _every_structure

    model = _every_structure()
    path = save_exported(model, tmp_path / "m", base=FACTORIES["resnet_b"])
    loaded = load_exported(path, factory=FACTORIES["resnet_b"])
    x = example_input(torch.float32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    kept = {c["name"]: c.get("kept_channels") for c in read_manifest(path)["changes"]}
    assert kept["layer1.conv1"] == model.layer1.conv1.slimtrain_kept_channels


def test_a_model_load_could_not_rebuild_is_not_saved(tmp_path):
    """Channels removed inside a factorized layer cannot be recorded: refused before anything is written."""
    from slimtrain.compress import filter_pruning_plan, remove_channels, save_exported, svd_decompose
    from slimtrain.errors import UnsupportedModelError

    def base():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3))

    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        factorized = svd_decompose(base(), 0.5)
        thinned = remove_channels(factorized, filter_pruning_plan(factorized, 0.5, x), x)
    with pytest.raises(UnsupportedModelError, match=r"cannot record.*would be rebuilt as"):
        save_exported(thinned, tmp_path / "m", base=base)
    assert not (tmp_path / "m").exists()
