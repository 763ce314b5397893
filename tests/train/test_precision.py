"""``train.precision`` (bf16, fp16 with loss scaling) for every method, and ``train.compile``."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from slimtrain.errors import RecipeError
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import (
    METHODS,
    Method,
    StepContext,
    StepOutput,
    get_method_class,
    list_methods,
    register_method,
)
from slimtrain.train.trainer import Trainer

# One step in bf16 / fp16 against the same step in fp32, as the relative distance of the two updates
# ‖Δ_low − Δ_fp32‖ / ‖Δ_fp32‖ over all parameters. bfloat16 keeps 8 bits of mantissa (2⁻⁹ ≈ 0.2 % per
# rounding), float16 11 bits. Measured: 0.03–0.07 (bf16) and ≤ 0.02 (fp16) on the MLP and LeNet-5, 0.10 and
# 0.026 on the BatchNorm ResNet-8, whose batch statistics amplify the forward's rounding. A step on scaled
# gradients (fp16 without unscaling) or a skipped one would be off by about 1 or more.
UPDATE_RTOL = {"bf16": 0.15, "fp16": 0.05}

_MODELS = {
    "lenet5": ("group-lasso", "nuclear-norm", "prox-svd"),
    "resnet8": ("swd-structured", "network-slimming"),
}


def _tree(method: str, precision: str, **train: Any) -> dict[str, Any]:
    model: dict[str, Any] = {"name": "mlp", "kwargs": {"widths": [16]}}
    for name, methods in _MODELS.items():
        if method in methods:
            model = {"name": name, "kwargs": {"width": 4, "shortcut": "B"} if name == "resnet8" else {}}
    return {
        "name": f"{method}-{precision}",
        "seed": 1,
        "data": {"name": "digits", "val_fraction": 0.2},
        "model": model,
        "method": {"name": method},
        "optimizer": {"lr": 0.05, "weight_decay": 0.0 if method == "sfw" else 5e-4},
        "train": {
            "epochs": 1,
            "batch_size": 64,
            "device": "cpu",
            "precision": precision,
            "progress": False,
            "tensorboard": False,
            **train,
        },
    }


def _one_step_update(method: str, precision: str, run_dir: Any) -> dict[str, torch.Tensor]:
    """The parameter change of the first training step, with everything else as the trainer sets it up."""
    trainer = Trainer(recipe_from_dict(_tree(method, precision)), run_dir)
    comp = trainer.components
    comp.method.build_optimizer(comp.model)
    before = {name: p.detach().clone() for name, p in comp.model.named_parameters()}
    inputs, targets = next(iter(trainer.loader))
    ctx = StepContext(
        step=0, epoch=0, total_steps=trainer.total_steps, world=trainer.world, precision=trainer.precision
    )
    comp.method.training_step(comp.model, inputs, targets, ctx)
    return {name: p.detach() - before[name] for name, p in comp.model.named_parameters()}


def _distance(update: dict[str, torch.Tensor], reference: dict[str, torch.Tensor]) -> float:
    assert update.keys() == reference.keys()
    difference = torch.cat([(update[k] - reference[k]).flatten() for k in reference])
    return float(difference.norm() / torch.cat([r.flatten() for r in reference.values()]).norm())


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("method", list_methods())
def test_low_precision_step_matches_float32(method, precision, tmp_path):
    """One bf16 / fp16 step of every method moves the weights as the float32 step does, within
    ``UPDATE_RTOL``; a method that cannot train in that precision refuses it naming ``train.precision``.
    """
    if precision not in get_method_class(method).precisions:
        with pytest.raises(
            RecipeError, match=rf"'train.precision': method '{method}' trains in .*not {precision}"
        ):
            Trainer(recipe_from_dict(_tree(method, precision)), tmp_path / "refused")
        return
    torch.manual_seed(0)
    reference = _one_step_update(method, "fp32", tmp_path / "fp32")
    torch.manual_seed(0)
    update = _one_step_update(method, precision, tmp_path / precision)
    assert any(r.abs().max() > 0 for r in reference.values())
    assert _distance(update, reference) <= UPDATE_RTOL[precision]


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"precision": "fp8"}, r"'train.precision'"),
        ({"precision": "bf16", "dtype": "float64"}, r"'train.precision'.*needs train.dtype float32"),
        ({"compile": "sometimes"}, r"'train.compile'"),
    ],
)
def test_wrong_precision_or_compile_is_refused_by_name(train, message):
    """An unknown precision, low precision over float64 weights, or a non-boolean compile flag."""
    with pytest.raises(RecipeError, match=message):
        recipe_from_dict({"train": train})


def test_fp16_resume_is_bitwise_with_the_loss_scale_checkpointed(tmp_path, train_until_killed):
    """A float16 run killed mid-epoch and resumed ends with the uninterrupted weights: the GradScaler's
    scale and growth tracker travel in the checkpoint.
    """
    recipe = recipe_from_dict(_tree("dense", "fp16", max_steps=9, checkpoint_every_steps=4))
    full = Trainer(recipe, tmp_path / "full")
    full.fit()
    train_until_killed(recipe, tmp_path / "split", step=6)
    state, _ = CheckpointStore(tmp_path / "split" / "checkpoints").load_latest()
    assert state["step"] == 4 and state["grad_scaler"]["scale"] > 0
    resumed = Trainer(recipe, tmp_path / "split")
    resumed.fit(resume=True)
    for name, value in full.components.model.state_dict().items():
        assert torch.equal(value, resumed.components.model.state_dict()[name]), name
    assert resumed.precision.state_dict() == full.precision.state_dict()


def test_compiled_run_trains(tmp_path, monkeypatch):
    """``train.compile``, the one compile test: a compiled MLP trains, and its checkpoint keeps the module's
    own parameter names. It compiles with AOTAutograd's eager backend, which traces forward and backward as
    the default backend does but generates no code (inductor's cold C++ compile costs minutes on the two
    loaded cores of CI).
    """
    compile_module = torch.nn.Module.compile
    monkeypatch.setattr(
        torch.nn.Module, "compile", lambda module, **options: compile_module(module, backend="aot_eager")
    )
    tree = _tree("dense", "fp32", max_steps=2, compile=True)
    tree["model"]["kwargs"] = {"widths": [8]}
    trainer = Trainer(recipe_from_dict(tree), tmp_path)
    results = trainer.fit()
    assert trainer.components.model._compiled_call_impl is not None
    assert results["steps"] == 2 and 0.0 <= results["val_accuracy"] <= 1.0
    state, _ = CheckpointStore(tmp_path / "checkpoints").load_latest(final_only=True)
    assert state["model"].keys() == trainer.components.model.state_dict().keys()
    assert not any(key.startswith("_orig_mod.") for key in state["model"])


class _StepsItsOwnOptimizer(Method):
    """A method written before ``train.precision``: ``ctx.backward``, then ``optimizer.step()`` directly."""

    name = "test-steps-its-own-optimizer"

    def training_step(self, model, inputs, targets, ctx):
        self.optimizer.zero_grad(set_to_none=True)
        logits = model(inputs)
        loss = self.loss(model, logits, targets)
        ctx.backward(loss, list(model.parameters()))
        self.optimizer.step()  # on gradients still multiplied by the loss scale under fp16
        return StepOutput(loss=loss.detach(), logits=logits.detach())


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_a_method_that_steps_on_scaled_gradients_is_refused_in_fp16(precision, tmp_path):
    """fp16 scales the loss; a method that steps without unscaling would apply 65536× gradients: refused."""
    with METHODS.scratch():
        register_method(_StepsItsOwnOptimizer)
        trainer = Trainer(recipe_from_dict(_tree(_StepsItsOwnOptimizer.name, precision)), tmp_path / "run")
        if precision != "fp16":
            trainer.fit()
            return
        with pytest.raises(RecipeError, match=r"'train\.precision'.*test-steps-its-own-optimizer.*fp16"):
            trainer.fit()
    assert not list((tmp_path / "run" / "checkpoints").glob("*.pt"))
