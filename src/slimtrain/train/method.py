"""The method plugin interface and its registry.

A *method* is everything that distinguishes one compression-aware training technique from another: how the
model is prepared (layers converted, gates added), which optimizer drives it, what one training step does
(free to run several forward/backward passes), what happens at the end of training, and how the trained
model is compressed at a given level. The trainer knows nothing about any one method.

A method is either mini-batch (the default: ``training_step`` receives one batch at a time) or
**full-batch** (:attr:`Method.full_batch`): then the trainer hands ``training_step`` the whole training split,
unshuffled and unaugmented, once per epoch, and ``train.batch_size`` is not used. Full-batch methods (NN-BCD)
keep per-sample state across epochs and run in a single process.

Methods choose their compression level either **after** training (one training, many levels: SFW, dense +
magnitude pruning) or **during** training (one training per level: SWD's target, TDLRT's tolerance). The
second kind names the option that holds the level in :attr:`Method.level_option`, so ``compare`` can run one
training per level. :meth:`Method.levels` declares, per structure, which levels a trained run can be evaluated
at (:class:`Levels`).

Methods are looked up by name in a :class:`slimtrain.registry.Registry` of kind ``"method"``. The engine
imports no plugin: the built-in methods (and those of installed packages) are declared as entry points of the
group ``slimtrain.methods`` (``name = "package.module:Class"``), loaded when a name is first looked up; a
method defined in-process registers itself with :func:`register_method`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from slimtrain._model_io import ModelInputs, logits_of
from slimtrain.registry import Registry
from slimtrain.train.precision import MixedPrecision

if TYPE_CHECKING:
    from slimtrain.train.config import Recipe
    from slimtrain.train.distributed import World

__all__ = [
    "DEFAULT_LEVELS",
    "ENTRY_POINT_GROUP",
    "METHODS",
    "GradientHealth",
    "Levels",
    "Method",
    "NoOptions",
    "StepContext",
    "StepOutput",
    "build_standard_optimizer",
    "finite_flags",
    "full_precision",
    "get_method_class",
    "list_methods",
    "register_method",
    "trainable_parameters",
]

#: Entry-point group through which installed packages (and slimtrain itself) declare methods.
ENTRY_POINT_GROUP = "slimtrain.methods"
METHODS: Registry[type[Method]] = Registry("method", entry_point_group=ENTRY_POINT_GROUP)


class NoOptions(BaseModel):
    """Options schema of a method that takes none."""

    model_config = ConfigDict(extra="forbid")


def finite_flags(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Per tensor, whether all its entries are finite: one boolean tensor on the device, no host read.

    One fused max-norm kernel: the largest |x| is NaN/inf exactly for a non-finite tensor and, unlike the L2
    norm, cannot overflow on finite values (a float32 tensor of L2 norm above ~1.8e19). Empty tensors are
    finite.
    """
    full = [t.detach() for t in tensors if t.numel()]
    largest = iter(torch._foreach_norm(full, ord=math.inf) if full else ())
    return torch.stack(
        [
            torch.isfinite(next(largest)) if t.numel() else torch.ones((), dtype=torch.bool, device=t.device)
            for t in tensors
        ]
    )


class GradientHealth:
    """A record, kept on the device, of the steps whose gradients were not finite.

    :meth:`StepContext.backward` records every pass's averaged gradients here without waiting for the host;
    the trainer reads the record at its log and checkpoint steps (:meth:`flag`, :meth:`culprits`) and
    clears it (:meth:`clear`).
    """

    def __init__(self) -> None:
        self._passes: list[tuple[int, list[nn.Parameter], torch.Tensor]] = []

    def record(self, step: int, parameters: list[nn.Parameter]) -> None:
        """Note which of ``parameters``' gradients are finite after a pass of ``step`` (no host sync)."""
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:
            finite = finite_flags(grads)
            self._passes.append((step, [p for p in parameters if p.grad is not None], finite))

    def flag(self, device: torch.device) -> torch.Tensor:
        """A 0-dim float64 on ``device``: 1 if any recorded gradient was not finite, else 0 (no host sync)."""
        if not self._passes:
            return torch.zeros((), dtype=torch.float64, device=device)
        bad = torch.stack([(~finite).any() for _, _, finite in self._passes]).any()
        return bad.to(device=device, dtype=torch.float64)

    def culprits(self, names: dict[int, str]) -> tuple[int, list[str]] | None:
        """The first step with a non-finite gradient and the parameters it hit (host reads), or ``None``."""
        for step, parameters, finite in self._passes:
            ok = finite.tolist()
            if not all(ok):
                bad = [p for p, good in zip(parameters, ok, strict=True) if not good]
                return step, [names.get(id(p), f"<unnamed parameter of shape {tuple(p.shape)}>") for p in bad]
        return None

    def clear(self) -> None:
        """Forget what was recorded (after a check found everything finite)."""
        self._passes.clear()


@dataclass
class StepContext:
    """What a method's training step may use besides the model and the batch.

    A step runs its forward passes inside :meth:`autocast`, back-propagates with :meth:`backward` and steps
    its optimizers with :meth:`step_optimizer`; with ``train.precision: fp32`` these are the plain
    operations. Nothing here waits for the host: a non-finite gradient is recorded on the device
    (:attr:`health`) and reported by the trainer at its next log or checkpoint step.

    Attributes:
        step: global optimizer step index (0-based) across epochs.
        epoch: current epoch (0-based).
        total_steps: the number of steps the whole run will take.
        world: the process group; ``backward`` already averages gradients across it.
        grad_evals: forward/backward passes run so far in this step (counted by ``backward``).
        parameter_names: ``id(parameter) -> qualified name``, used to name the culprits of a non-finite
            gradient.
        precision: autocast and loss scaling (``train.precision``); the default is plain float32.
        health: where non-finite gradients are recorded; ``None`` records nothing.
    """

    step: int
    epoch: int
    total_steps: int
    world: World
    grad_evals: int = 0
    parameter_names: dict[int, str] = field(default_factory=dict)
    precision: MixedPrecision = field(default_factory=MixedPrecision)
    health: GradientHealth | None = None

    def autocast(self) -> torch.autocast:
        """The autocast context for forward passes (disabled for fp32); compute losses outside it."""
        return self.precision.autocast()

    def backward(self, loss: torch.Tensor, parameters: list[nn.Parameter]) -> None:
        """Back-propagate ``loss`` and average the gradients of ``parameters`` over all processes.

        Gradients are averaged explicitly (not by a ``DistributedDataParallel`` wrapper) so that methods may
        run several passes per batch and re-create parameters (rank changes) without losing synchronisation.
        With ``fp16`` the loss is scaled first: call :meth:`unscale_` before reading the gradients
        (:meth:`step_optimizer` does it).
        """
        self.precision.scale(loss).backward()
        self.world.average_gradients(parameters)
        self.grad_evals += 1
        # Overflowing fp16 gradients are expected and skipped by the scaler, not a divergence.
        if self.health is not None and not self.precision.scaling:
            self.health.record(self.step, parameters)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        """Unscale the gradients of ``optimizer``'s parameters (fp16; once per step, a no-op otherwise)."""
        self.precision.unscale_(optimizer)

    def step_optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        """Step ``optimizer`` on unscaled gradients (fp16: skipped when they overflowed)."""
        self.precision.step(optimizer)


@dataclass(frozen=True)
class Levels:
    """The compression levels a trained run of a method produces for one structure.

    Two kinds (build them with :meth:`after_training` and :meth:`set_by_training`):

    - **chosen after training** (``values`` empty): one training, then any level in [0, 1) is applied to
      the trained model (SFW, dense + magnitude pruning);
    - **set by training**: training fixed the level; the trained model *is* the compressed model and only
      the native ``values`` exist, in the unit of the method option ``option`` that set them (SWD's
      ``target``, TDLRT's tolerance ``tau``, fixed-rank's ``rank_fraction``), or ``(0.0,)`` for a model
      evaluated as trained without compression. ``values`` is empty when the option is unset because the
      level came from another option (a TT ``rank`` instead of ``storage_reduction``).

    Attributes:
        chosen_after_training: Whether any level in [0, 1) may be chosen after training.
        values: The native level(s) set by training (empty when chosen after training).
        option: The method option holding the native level, if any.
    """

    chosen_after_training: bool
    values: tuple[float, ...] = ()
    option: str | None = None

    @classmethod
    def after_training(cls) -> Levels:
        """Any level in [0, 1), chosen after training."""
        return cls(chosen_after_training=True)

    @classmethod
    def set_by_training(cls, values: tuple[float, ...] = (), option: str | None = None) -> Levels:
        """Only the native ``values``, fixed by training through ``option``."""
        return cls(chosen_after_training=False, values=tuple(float(v) for v in values), option=option)

    def admits(self, level: float) -> bool:
        """Whether a trained run can be evaluated or exported at ``level``."""
        if self.chosen_after_training:
            return 0.0 <= level < 1.0
        return level in self.values


@dataclass
class StepOutput:
    """Result of one training step: the loss of the first pass and the logits it produced."""

    loss: torch.Tensor
    logits: torch.Tensor
    extras: dict[str, float] = field(default_factory=dict)


class Method:
    """Base class of training methods; the defaults implement plain dense training.

    Subclasses set :attr:`name`, :attr:`Options` (a pydantic model with ``extra="forbid"``) and override the
    hooks they need. A method owns its optimizer(s): :attr:`optimizer`, and any others it lists in
    :meth:`optimizers` (one per pass of a multi-pass step). Before every step the trainer sets each param
    group's ``lr`` of every optimizer in :meth:`optimizers` to ``initial_lr × factor``, where ``factor`` is
    :meth:`lr_factor` of the recipe's scheduled factor (``initial_lr`` defaults to the group's ``lr`` when the
    optimizer is first scheduled).

    A training step runs its forward passes in ``ctx.autocast()``, computes losses and penalties outside it
    (in float32, :func:`full_precision` of the logits), and steps through
    ``ctx.step_optimizer(optimizer)``, so that ``train.precision`` (:attr:`precisions`) works; it reads no
    tensor value on the host (docs/training.md, "Host synchronisation").

    Args:
        options: the method's validated options.
        recipe: the whole recipe (optimizer, schedule and training settings).

    Attributes:
        steps_per_epoch: optimizer steps per epoch of the run, set by the trainer before
            :meth:`build_optimizer` (``None`` outside training, e.g. in a sweep), for methods whose
            schedules are given in epochs.
        total_steps: optimizer steps of the whole run, set by the trainer with :attr:`steps_per_epoch`
            (``None`` outside training).
        example_inputs: a couple of training inputs (a tensor, or the tuple or dict the model is called
            with) on the run's device and dtype, set by the trainer before
            :meth:`prepare` (``None`` when the method is used outside a run), for methods that trace the
            model (e.g. its channel groups).
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type[BaseModel]] = NoOptions
    levels_chosen: ClassVar[Literal["after_training", "during_training"]] = "after_training"
    level_option: ClassVar[str | None] = None
    structures: ClassVar[tuple[str, ...]] = ("unstructured", "filter", "lowrank")
    full_batch: ClassVar[bool] = False
    #: The ``train.precision`` values the method trains with; the trainer refuses the others.
    precisions: ClassVar[tuple[str, ...]] = ("fp32", "bf16", "fp16")

    def __init__(self, options: BaseModel, recipe: Recipe) -> None:
        self.options = options
        self.recipe = recipe
        self.optimizer: torch.optim.Optimizer | None = None
        self.steps_per_epoch: int | None = None
        self.total_steps: int | None = None
        self.example_inputs: ModelInputs | None = None

    # -- set-up -------------------------------------------------------------------------------------------
    def prepare(self, model: nn.Module) -> nn.Module:
        """Return the model to train (e.g. with layers converted); the default returns it unchanged."""
        return model

    def build_optimizer(self, model: nn.Module) -> torch.optim.Optimizer | None:
        """Build :attr:`optimizer` from the recipe's optimizer section over the trainable parameters.

        A gradient-free method returns ``None`` (and leaves :attr:`optimizer` ``None``); the trainer then
        applies no learning-rate schedule.
        """
        self.optimizer = build_standard_optimizer(
            [p for p in model.parameters() if p.requires_grad], self.recipe.optimizer
        )
        return self.optimizer

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """Every optimizer the trainer schedules (and checkpoints); the default is :attr:`optimizer`, if set.

        A method running several optimizers (e.g. one per pass of a multi-pass step) returns them all, the
        :attr:`optimizer` (if any) first; the list is read again before every step, so optimizers
        re-created during training are scheduled too.
        """
        return [self.optimizer] if self.optimizer is not None else []

    # -- training -----------------------------------------------------------------------------------------
    def lr_factor(self, step: int, scheduled: float) -> float:
        """The learning-rate factor step ``step`` trains with; the default is the recipe's ``scheduled`` one.

        The trainer calls this once per step, before :meth:`training_step`, sets every param group of
        :meth:`optimizers` to ``initial_lr × factor`` and logs the factor (``lr_factor`` in
        ``train_log.csv``). A method replaying or reshaping the schedule overrides it (``lr-rewinding``
        replays the whole schedule inside every fine-tuning iteration). It must be a pure function of
        ``step`` and the method's state, so a resumed run trains with the same rates.

        Args:
            step: The global optimizer step (0-based).
            scheduled: The recipe schedule's factor at ``step``.
        """
        return scheduled

    def loss(self, model: nn.Module, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Training loss of one pass: cross-entropy plus :meth:`penalty`."""
        loss = nn.functional.cross_entropy(logits, targets)
        penalty = self.penalty(model)
        return loss if penalty is None else loss + penalty

    def penalty(self, model: nn.Module) -> torch.Tensor | None:
        """A regularisation term added to the loss (group lasso, nuclear norm, ...); ``None`` for none."""
        return None

    def training_step(
        self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, ctx: StepContext
    ) -> StepOutput:
        """Run one optimizer step on a batch; the default is one forward/backward pass and one step.

        For a :attr:`full_batch` method ``inputs``/``targets`` are the whole training split, once per epoch.
        """
        assert self.optimizer is not None, "build_optimizer must run before training_step"
        self.optimizer.zero_grad(set_to_none=True)
        with ctx.autocast():
            logits = logits_of(model(inputs))
        loss = self.loss(model, full_precision(logits), targets)
        ctx.backward(loss, trainable_parameters(model))
        ctx.step_optimizer(self.optimizer)
        self.after_optimizer_step(model, ctx)
        return StepOutput(loss=loss.detach(), logits=logits.detach())

    def after_optimizer_step(self, model: nn.Module, ctx: StepContext) -> None:
        """Hook after each optimizer step (re-apply masks, proximal maps, ...); the default does nothing."""

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        """Hook after each completed epoch; the default does nothing.

        ``epoch`` epochs are done; it runs after their validation and before the epoch's checkpoint, so what
        it changes is saved.
        """

    def finalize(self, model: nn.Module) -> None:
        """Hook at the end of training (e.g. a final hard pruning); the default does nothing."""

    def describe(self, model: nn.Module) -> dict[str, Any]:
        """Method-specific quantities to log at each epoch end (e.g. ranks); the default is empty."""
        return {}

    # -- state --------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Method state to checkpoint (schedule positions, ranks, masks); tensors and plain values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any], model: nn.Module) -> None:
        """Restore :meth:`state_dict` output; may reshape ``model`` (ranks) before its weights are loaded."""

    # -- compression --------------------------------------------------------------------------------------
    def levels(self, structure: str) -> Levels | None:
        """The levels a trained run produces for ``structure``; ``None``: the method cannot produce it.

        The default follows :attr:`levels_chosen`: a method choosing its level after training produces any
        level of each of its :attr:`structures` and, for ``native`` (the model as trained), level 0; a method
        fixing its level during training produces, for ``native`` and its :attr:`structures`, only the value
        of its :attr:`level_option`.
        """
        if self.levels_chosen == "during_training":
            if structure != "native" and structure not in self.structures:
                return None
            value = getattr(self.options, self.level_option, None) if self.level_option else None
            values = (value,) if isinstance(value, int | float) and not isinstance(value, bool) else ()
            return Levels.set_by_training(values, option=self.level_option)
        if structure == "native":
            return Levels.set_by_training((0.0,))
        return Levels.after_training() if structure in self.structures else None

    def dense_reference(self, model: nn.Module) -> nn.Module:
        """The dense model a trained ``model`` is compared with (N_ref, dense MACs and latency reference).

        Always a new model; ``model`` is never modified. The default is a deep copy; methods that train
        factorized layers return the copy with those layers replaced by dense layers of the reconstructed
        weights.
        """
        return copy.deepcopy(model)

    def params_budget(self, model: nn.Module) -> int | None:
        """The parameter budget the method prunes ``model`` to, counted analytically; ``None``: it has none.

        A method that removes channels down to B = ⌊(1 − target)·N_total⌋ parameters (structured SWD, network
        slimming, the channel baselines) returns B; a sweep row reports it as ``params_budget`` next to
        ``params_stored_all``, the count the exported model reaches (docs/metrics.md).
        """
        return None

    def default_levels(self, structure: str) -> list[float]:
        """Levels the sweep evaluates when the recipe names none."""
        return list(DEFAULT_LEVELS.get(structure, (0.0,)))

    def compress(
        self, model: nn.Module, structure: str, level: float, example_inputs: torch.Tensor
    ) -> nn.Module:
        """Return a compressed copy of the trained ``model`` at ``level`` of ``structure``.

        The default applies the library's standard post-training operators
        (:func:`slimtrain.compress.compress_standard`); ``native`` evaluates the trained model as it is
        (methods that fix their level during training). ``example_inputs`` is a small real input batch,
        used to trace channel dependencies.
        """
        from slimtrain.compress.standard import compress_standard

        return compress_standard(model, structure, level, example_inputs=example_inputs)


DEFAULT_LEVELS: dict[str, tuple[float, ...]] = {
    "unstructured": (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 0.99),
    "filter": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "lowrank": (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9),
    "native": (0.0,),
}


def full_precision(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 at least: an autocast forward's bf16/fp16 logits, for the loss."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Parameters of ``model`` that require gradients, in a deterministic order."""
    return [p for p in model.parameters() if p.requires_grad]


def build_standard_optimizer(
    params: list[nn.Parameter] | list[dict[str, Any]], config: Any
) -> torch.optim.Optimizer:
    """Build SGD (momentum, Nesterov, weight decay), Adam or AdamW from an ``OptimizerConfig``."""
    if config.name == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.nesterov and config.momentum > 0,
            weight_decay=config.weight_decay,
        )
    optimizer_class = torch.optim.Adam if config.name == "adam" else torch.optim.AdamW
    return optimizer_class(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def register_method(cls: type[Method]) -> type[Method]:
    """Class decorator that registers a method under its :attr:`Method.name`.

    Raises:
        TypeError: ``cls`` is not a :class:`Method` subclass.
        ValueError: an empty name, or a name already registered to another class.
    """
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise TypeError(f"register_method needs a Method subclass, got {cls!r}")
    if not cls.name:
        raise ValueError(f"{cls.__qualname__} must set a non-empty `name`")
    return METHODS.register(cls.name, cls)


def get_method_class(name: str) -> type[Method]:
    """Return the registered method class called ``name`` (loading the entry points on a miss).

    Raises:
        UnknownNameError: no such method (a ``KeyError``); the message lists the registered names.
    """
    return METHODS.get(name)


def list_methods() -> list[str]:
    """Names of every registered method (entry points included), sorted."""
    return METHODS.names()
