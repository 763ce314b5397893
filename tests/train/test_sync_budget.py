"""Host synchronisations per training step, per method, against the budget of docs/training.md.

``benchmarks.harness.HostReads`` counts the operations that make the host wait for the device:
``_local_scalar_dense`` (``.item()``, ``float()``, ``bool()``), ``nonzero`` / ``masked_select`` / ``unique``
(their output size is data-dependent), device→host copies, and ``Tensor.tolist()`` / ``.numpy()``. Events are
attributed to the step whose ``training_step`` last started; the first step (lazy set-up) and the last one
(epoch end: evaluation, checkpoint) are not budgeted.
"""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks import harness

from slimtrain.train.config import recipe_from_dict
from slimtrain.train.method import get_method_class, list_methods
from slimtrain.train.trainer import Trainer


class HostReads(harness.HostReads):
    """Counts host synchronisations by (step, phase, kind); phase is ``method`` inside ``training_step``."""

    def __init__(self) -> None:
        super().__init__()
        self.step, self.phase = -1, "trainer"

    def add(self, kind: str) -> None:
        self.counts[(self.step, self.phase, kind)] += 1

    def at(self, step: int, phase: str) -> dict[str, int]:
        return {kind: n for (s, p, kind), n in self.counts.items() if s == step and p == phase and n}


# Host reads per step between log steps, per method (docs/training.md, "Host synchronisation"); every
# other method, the trainer and the steps of these methods outside the listed phases: none.
METHOD_BUDGET: dict[str, dict[str, int]] = {
    # rank truncation: the new ranks are sizes, read on the host (tiny MLP: 2 factorized layers)
    "tdlrt": {"item": 5, "size-dependent": 2},
    "dlrt": {"item": 5, "size-dependent": 2},
    # closed-form block updates and their objective values read for the log (one step per epoch)
    "nnbcd": {"item": 14},
    "nnbcd-prune": {"item": 9},
}
# One-off events inside the measured steps: {method: {step: budget}} (network slimming prunes at step 3: its
# selection checks once that the budget is reachable).
EVENT_BUDGET: dict[str, dict[int, dict[str, int]]] = {"network-slimming": {3: {"item": 1}}}

_MODELS = {
    "lenet5": ("group-lasso", "nuclear-norm", "prox-svd"),
    "resnet8": ("swd-structured", "network-slimming"),
}
MEASURED_STEPS = range(1, 5)  # of 6


def _recipe(method: str, log_every_steps: int = 1000) -> Any:
    model: dict[str, Any] = {"name": "mlp", "kwargs": {"widths": [12]}}
    for name, methods in _MODELS.items():
        if method in methods:
            model = {"name": name, "kwargs": {"width": 4, "shortcut": "B"} if name == "resnet8" else {}}
    full_batch = get_method_class(method).full_batch
    return recipe_from_dict(
        {
            "name": f"sync-{method}",
            "seed": 3,
            "data": {"name": "digits", "val_fraction": 0.2},
            "model": model,
            "method": {"name": method},
            "optimizer": {"lr": 0.05, "weight_decay": 0.0 if method == "sfw" else 5e-4},
            "train": {
                "epochs": 6 if full_batch else 1,
                "batch_size": 64,
                "device": "cpu",
                "progress": False,
                "tensorboard": False,
                "checkpoint_every_steps": 0,
                "log_every_steps": log_every_steps,
                "max_steps": 6,
            },
        }
    )


def _count(recipe: Any, run_dir: Any) -> HostReads:
    trainer = Trainer(recipe, run_dir)
    reads = HostReads()
    real = trainer.components.method.training_step

    def counted(model, inputs, targets, ctx):
        reads.step, reads.phase = ctx.step, "method"
        try:
            return real(model, inputs, targets, ctx)
        finally:
            reads.phase = "trainer"

    trainer.components.method.training_step = counted
    with reads:
        trainer.fit()
    return reads


@pytest.mark.parametrize("method", list_methods())
def test_host_reads_per_step_within_budget(method, tmp_path):
    """Between log steps the trainer reads nothing on the host, and each method no more than its budget
    (none for SFW, SWD and every single-pass method); a full-batch method's every step ends an epoch, so
    only its ``training_step`` is budgeted.
    """
    reads = _count(_recipe(method), tmp_path)
    for step in MEASURED_STEPS:
        budget = EVENT_BUDGET.get(method, {}).get(step, METHOD_BUDGET.get(method, {}))
        inside = reads.at(step, "method")
        assert all(inside.get(kind, 0) <= budget.get(kind, 0) for kind in inside), (step, inside, budget)
        if not get_method_class(method).full_batch:
            assert reads.at(step, "trainer") == {}, (step, reads.at(step, "trainer"))


def test_a_log_step_reads_the_host_once(tmp_path):
    """A log step reads its window of losses, counts and divergence flags in one ``tolist``."""
    reads = _count(_recipe("sfw", log_every_steps=2), tmp_path)
    for step in MEASURED_STEPS:
        expected = {"tolist": 1} if (step + 1) % 2 == 0 else {}
        assert reads.at(step, "trainer") == expected, step
        assert reads.at(step, "method") == {}, step
