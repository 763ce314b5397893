"""``model.init_from``: a run starts from trained weights, strictly, before the method prepares the model."""

import pytest
import safetensors.torch
import torch
from hypothesis import given
from hypothesis import strategies as st

from slimtrain.compress import global_magnitude_prune, save_exported, to_exported
from slimtrain.errors import BadInputError, RecipeError, RunBuildError
from slimtrain.experiments.sweeping import load_trained
from slimtrain.io import sha256_file
from slimtrain.models import create_model
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.identity import computed_keys, final_checkpoint_sha256, recipe_digest, run_identity
from slimtrain.train.init_from import map_keys
from slimtrain.train.trainer import Trainer, build_run

DIGITS = {"num_classes": 10, "in_channels": 1, "image_size": 8}
WIDTHS = [32]
BASE = {
    "data": {"name": "digits", "val_fraction": 0.2},
    "model": {"name": "mlp", "kwargs": {"widths": WIDTHS}},
    "train": {"epochs": 1, "batch_size": 64, "progress": False, "tensorboard": False, "max_steps": 3},
}


def _recipe(init_from=None, **model):
    tree = {**BASE, "model": {**BASE["model"], **model}}
    if init_from is not None:
        tree["model"]["init_from"] = str(init_from)
    return recipe_from_dict(tree)


def _trained(seed=123, **kwargs):
    """A model of another seed than the recipe's: loading it is visible in every tensor."""
    torch.manual_seed(seed)
    return create_model("mlp", **{**DIGITS, "widths": WIDTHS, **kwargs})


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_loaded(model, state):
    own = model.state_dict()
    assert own.keys() == state.keys()
    for name, value in state.items():
        assert torch.equal(own[name], value), name


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished (3-step) dense run on digits."""
    path = tmp_path_factory.mktemp("source") / "dense"
    Trainer(_recipe(), path).fit()
    return path


def _save(kind, model, path):
    """Write ``model`` as a source of ``kind`` below ``path``; return what ``init_from`` names."""
    if kind == "safetensors":
        safetensors.torch.save_model(model, str(path / "w.safetensors"))
        return path / "w.safetensors"
    if kind == "state-dict":
        torch.save(model.state_dict(), path / "w.pt")
        return path / "w.pt"
    if kind == "checkpoint":  # the layout of a slimtrain training checkpoint
        torch.save({"model": model.state_dict(), "step": 3, "method": {}}, path / "final.pt")
        return path / "final.pt"
    save_exported(to_exported(model, "unstructured", None), path / "export", base="mlp",
                  base_kwargs={**DIGITS, "widths": WIDTHS})  # fmt: skip
    return path / "export"


@pytest.mark.parametrize("kind", ["safetensors", "state-dict", "checkpoint", "export"])
def test_each_file_source_loads_exactly(tmp_path, kind):
    """The built model holds the source's tensors, not its own seed's initialisation."""
    trained = _trained()
    comp = build_run(_recipe(_save(kind, trained, tmp_path)))
    _assert_loaded(comp.model, _state(trained))
    assert not torch.equal(build_run(_recipe()).model.classifier.weight, trained.classifier.weight)


def test_run_directory_loads_its_final_checkpoint_and_identity_hashes_it(run_dir):
    """A run directory gives its final checkpoint's model; the digest holds that file's SHA-256."""
    state = torch.load(run_dir / "checkpoints" / "final.pt", weights_only=True)["model"]
    recipe = _recipe(run_dir)
    _assert_loaded(build_run(recipe).model, state)
    assert computed_keys(recipe)["model.init_from.sha256"] == final_checkpoint_sha256(run_dir)


def test_a_run_started_from_another_trains_and_records_its_identity(tmp_path, run_dir):
    """Training from a run directory works end to end; the identity's recipe digest counts the weights."""
    recipe = _recipe(run_dir)
    results = Trainer(recipe, tmp_path / "fine-tuned").fit()
    assert results["recipe_digest"] == recipe_digest(recipe) != recipe_digest(_recipe())


def test_export_of_a_pruned_model_keeps_its_zeros(tmp_path):
    """An unstructured-pruned export keeps the architecture: it loads, zeros included."""
    pruned = global_magnitude_prune(_trained(), 0.8)
    comp = build_run(_recipe(_save("export", pruned, tmp_path)))
    _assert_loaded(comp.model, _state(pruned))
    assert (comp.model.hidden[0].weight == 0).float().mean() > 0.5


def test_export_of_a_thinned_model_is_refused_naming_its_layers(tmp_path):
    """An export whose layers differ from its base (channels removed) cannot start a base-model run."""
    thinned = create_model("mlp", **DIGITS, widths=[16])
    save_exported(thinned, tmp_path / "thin", base="mlp", base_kwargs={**DIGITS, "widths": WIDTHS})
    with pytest.raises(RunBuildError, match=r"changes the architecture.*'hidden\.0'.*'classifier'"):
        build_run(_recipe(tmp_path / "thin"))


@given(
    prefixes=st.lists(st.sampled_from(["module.", "model.", "_orig_mod."]), max_size=3),
    compiled_inside=st.booleans(),
)
def test_wrapper_prefixes_are_mapped(prefixes, compiled_inside):
    """DDP / wrapper / torch.compile names map back onto the model's names, whatever their nesting."""
    own = list(_trained().state_dict())
    inner = [k.replace("hidden.0.", "hidden.0._orig_mod.") if compiled_inside else k for k in own]
    saved = ["".join(prefixes) + k for k in inner]
    assert list(map_keys(saved, set(own)).values()) == own


def test_a_prefix_the_model_itself_has_is_kept():
    """A model whose own modules start with ``model.`` keeps that prefix (it is not a wrapper's)."""
    own = {"model.weight", "model.bias"}
    assert map_keys(sorted(own), own) == {k: k for k in own}


def test_prefixed_state_loads(tmp_path):
    """A state dict saved from a DDP-wrapped, compiled model loads into the plain model."""
    trained = _trained()
    torch.save({f"module._orig_mod.{k}": v for k, v in trained.state_dict().items()}, tmp_path / "w.pt")
    _assert_loaded(build_run(_recipe(tmp_path / "w.pt")).model, _state(trained))


def test_another_class_count_needs_the_classifier_left_out(tmp_path):
    """A 5-class source refuses a 10-class model naming the classifier's shapes; excluded, the classifier
    keeps the recipe's fresh initialisation and everything else is loaded.
    """
    five = _trained(num_classes=5)
    path = _save("safetensors", five, tmp_path)
    with pytest.raises(
        RunBuildError, match=r"classifier\.weight \(file \[5, 32\], model \[10, 32\]\)"
    ) as err:
        build_run(_recipe(path))
    assert "init_exclude" in str(err.value) and isinstance(err.value, BadInputError)
    model = build_run(_recipe(path, init_exclude=["classifier"])).model
    fresh = build_run(_recipe()).model
    assert torch.equal(model.hidden[0].weight, five.hidden[0].weight)
    assert torch.equal(model.classifier.weight, fresh.classifier.weight)


def test_strict_errors_name_missing_and_unexpected_keys(tmp_path):
    """Every key the file lacks or the model lacks is named."""
    state = _state(_trained())
    del state["hidden.0.bias"]
    state["extra.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "w.pt")
    with pytest.raises(
        RunBuildError, match=r"missing from the file: hidden\.0\.bias.*not in the model: extra"
    ):
        build_run(_recipe(tmp_path / "w.pt"))


def test_bad_sources_and_exclusions_are_refused(tmp_path, run_dir):
    """Missing paths, unfinished runs, unreadable files and unknown modules are named; init_exclude alone
    is a recipe error.
    """
    with pytest.raises(RunBuildError, match="does not exist"):
        build_run(_recipe(tmp_path / "nowhere.pt"))
    (tmp_path / "unfinished" / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunBuildError, match="no final checkpoint"):
        build_run(_recipe(tmp_path / "unfinished"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file of tensors")
    with pytest.raises(RunBuildError, match=r"junk\.safetensors"):
        build_run(_recipe(tmp_path / "junk.safetensors"))
    with pytest.raises(RunBuildError, match=r"'fc' names no module.*classifier"):
        build_run(_recipe(run_dir, init_exclude=["fc"]))
    with pytest.raises(RecipeError, match=r"model\.init_exclude"):
        _recipe(init_exclude=["classifier"])


def test_a_finished_run_keeps_its_identity_when_its_starting_weights_are_gone(tmp_path):
    """The identity uses the SHA-256 recorded when the run trained; the run rebuilds without the file."""
    path = _save("safetensors", _trained(), tmp_path)
    recipe = _recipe(path)
    Trainer(recipe, tmp_path / "run").fit()
    before = run_identity(tmp_path / "run")
    assert before.recipe_digest == recipe_digest(recipe)
    path.unlink()
    assert run_identity(tmp_path / "run") == before
    assert recipe_digest(recipe) != before.recipe_digest  # a new training from the gone file is another run
    assert load_trained(tmp_path / "run").model is not None  # sweep and export rebuild it without the file


def test_identity_follows_the_weights_file(tmp_path):
    """Other weights at the same path change the recipe digest; a gone file never matches it."""
    path = _save("safetensors", _trained(), tmp_path)
    recipe = _recipe(path)
    first = recipe_digest(recipe)
    assert computed_keys(recipe)["model.init_from.sha256"] == sha256_file(path)
    _save("safetensors", _trained(seed=7), tmp_path)
    assert recipe_digest(recipe) != first
    path.unlink()
    assert computed_keys(recipe)["model.init_from.sha256"] is None


def test_tdlrt_factorizes_the_loaded_weights(tmp_path):
    """At full rank, TDLRT's converted model computes the loaded dense model's function (and does not
    without ``init_from``, where its factors are random).
    """
    trained = _trained(widths=[32, 32]).eval()
    path = _save("safetensors", trained, tmp_path)
    method = {"name": "tdlrt", "options": {"max_rank_fraction": 1.0}}

    def converted(init_from):
        tree = {**BASE, "model": {"name": "mlp", "kwargs": {"widths": [32, 32]}}, "method": method}
        if init_from is not None:
            tree["model"]["init_from"] = str(init_from)
        comp = build_run(recipe_from_dict(tree))
        assert type(comp.model.hidden[1]).__name__ == "MatrixFactorizedLinear"
        return comp.model.eval(), comp.splits.test.inputs[:64]

    model, inputs = converted(path)
    with torch.no_grad():
        expected = trained(inputs)
        torch.testing.assert_close(model(inputs), expected, atol=1e-4, rtol=1e-4)
        random, _ = converted(None)
        assert (random(inputs) - expected).abs().max() > 0.1


def test_nnbcd_starts_from_loaded_bias_free_weights(tmp_path):
    """NN-BCD's solver starts from the loaded weights of a bias-free MLP and refuses biases it would drop."""
    method = {"name": "nnbcd-prune", "options": {"sparsity": 0.5}}
    trained = _trained(bias=False)
    path = _save("safetensors", trained, tmp_path)

    def recipe(bias):
        tree = {
            **BASE,
            "method": method,
            "model": {"name": "mlp", "kwargs": {"widths": WIDTHS, "bias": bias}},
        }
        tree["model"]["init_from"] = str(path)
        return recipe_from_dict(tree)

    solver = build_run(recipe(False)).method.solver
    assert torch.equal(solver.weights[0], trained.hidden[0].weight)
    assert torch.equal(solver.weights[1], trained.classifier.weight)
    biased = _trained()
    safetensors.torch.save_model(biased, str(path))
    with pytest.raises(RunBuildError, match="bias-free"):
        build_run(recipe(True))
