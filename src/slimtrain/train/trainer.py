"""The training loop every method plugs into.

One loop for all methods: data sharded across processes, the method's ``training_step`` per batch (free to
run several passes), the learning-rate schedule applied once before each step to every optimizer the method
declares (:meth:`~slimtrain.train.method.Method.optimizers`, at the factor of
:meth:`~slimtrain.train.method.Method.lr_factor`; a plateau schedule fed each completed epoch's mean
training loss), mixed precision and compilation (``train.precision``,
``train.compile``), CSV logs (and TensorBoard when installed), progress (a live bar on a terminal, plain
lines otherwise), atomic checkpoints with everything needed to resume bit-exactly, and a clean stop on
divergence that leaves the last good checkpoint intact.

Steps never wait for the host: losses and correct counts stay on the device and are read, with the
divergence check (non-finite loss, gradients or weights), at log and checkpoint steps only, before any
checkpoint is written (docs/reliability.md; the per-method budget of host synchronisations is in
docs/training.md, "Host synchronisation").
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.nn.parameter import is_lazy
from tqdm import tqdm

from slimtrain._model_io import (
    ModelInputs,
    call_model,
    eval_mode,
    input_tensors,
    logits_of,
    map_tensors,
    move_inputs,
)
from slimtrain.data import BatchLoader, DatasetSplits, load_dataset
from slimtrain.errors import (
    BadInputError,
    CheckpointError,
    FactoryImportError,
    RecipeError,
    RunBuildError,
    SlimtrainError,
    TrainingDiverged,
    one_line,
)
from slimtrain.io import atomic_write_text
from slimtrain.models import build_model, model_arguments, resolve_factory
from slimtrain.models.registry import ModelFactory
from slimtrain.progress import format_duration
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import Recipe, recipe_from_dict, resolve_method_options, with_legacy_options
from slimtrain.train.distributed import World, init_world, resolve_device
from slimtrain.train.evaluate import evaluate
from slimtrain.train.identity import (
    EVALUATION_KEYS,
    INIT_SHA256_KEY,
    PRESENTATION_KEYS,
    flatten_recipe,
    init_weights_sha256,
    is_finished,
    remove_derived_outputs,
    run_identity,
)
from slimtrain.train.init_from import load_init_weights
from slimtrain.train.method import GradientHealth, Method, StepContext, finite_flags, get_method_class
from slimtrain.train.precision import MixedPrecision
from slimtrain.train.run_log import RunLog
from slimtrain.train.schedule import LRSchedule, set_lr_factor

DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Signals that stop training at the next step boundary, after a checkpoint (SIGTERM: cluster preemption).
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# Seconds after a first signal within which another counts as the same request: a terminal's Ctrl-C reaches
# torchrun's workers directly and again forwarded by torchrun, a preemption may signal every process.
REPEAT_WINDOW_S = 1.0
# Seconds between two plain progress lines (output that is not a terminal: logs, CI); epoch lines always.
PLAIN_PROGRESS_INTERVAL_S = 30.0


class StopRequests:
    """While entered, SIGINT and SIGTERM only ask the training loop to stop at its next safe point.

    The first signal sets :attr:`signal_name`, which the loop checks between steps; a second one (more than
    :data:`REPEAT_WINDOW_S` later) raises :class:`KeyboardInterrupt` at once. The previous handlers are put
    back on exit. Outside the main thread
    (where Python cannot install handlers), and for a signal the process ignores (``nohup``), nothing is
    installed.
    """

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._first_at = 0.0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopRequests:
        self.signal_name = None
        if threading.current_thread() is threading.main_thread():
            for signum in STOP_SIGNALS:
                previous = signal.getsignal(signum)
                if previous is signal.SIG_IGN:
                    continue
                self._previous[signum] = signal.SIG_DFL if previous is None else previous
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info: object) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        name, now = signal.Signals(signum).name, time.monotonic()
        if self.signal_name is None:
            self.signal_name, self._first_at = name, now
        elif now - self._first_at > REPEAT_WINDOW_S:
            raise KeyboardInterrupt(
                f"stopped at once by a second signal ({name}) before the next checkpoint was written"
            )


def _device(name: str, local_rank: int = 0) -> torch.device:
    """The recipe's ``train.device``; refuses ``cuda`` on a machine without CUDA, naming the key."""
    if name == "cuda" and not torch.cuda.is_available():
        why = "this torch build has no CUDA support" if torch.version.cuda is None else "no CUDA device found"
        raise RunBuildError(
            f"'train.device': 'cuda' was asked for but CUDA is not available ({why}, torch "
            f"{torch.__version__}); use --set train.device=cpu, or auto to take a GPU when there is one"
        )
    return resolve_device(name, local_rank)


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` holding NaN or infinite values (one host read)."""
    named = list(model.named_parameters())
    if not named:
        return []
    finite = finite_flags([p for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def _steps(first: int, last: int) -> str:
    """``at step N`` or ``between steps A and B`` (0-based step indices)."""
    return f"at step {last}" if first == last else f"between steps {first} and {last}"


class TrainingProgress:
    """What a training run shows: a live bar on a terminal, plain periodic lines otherwise.

    The training counterpart of :class:`slimtrain.progress.Progress` (items of sweeps, comparisons, exports).

    Values (loss, accuracy, throughput) are shown at log steps only, when the trainer has read them anyway;
    each epoch ends with one line (train loss, validation accuracy, learning rate, time) and the run with a
    short summary. Everything goes to standard error; nothing is shown when ``enabled`` is false.

    Args:
        enabled: Whether to show anything (``train.progress`` on the main process).
        epochs: The run's number of epochs.
        steps_per_epoch: Optimizer steps per epoch.
        live: A live bar (default: when standard error is a terminal).
    """

    def __init__(self, enabled: bool, epochs: int, steps_per_epoch: int, live: bool | None = None) -> None:
        self.enabled = enabled
        self.live = enabled and (sys.stderr.isatty() if live is None else live)
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self._bar: tqdm | None = None
        self._epoch = 0
        self._last_line = -math.inf

    def start_epoch(self, epoch: int, done: int) -> None:
        """Epoch ``epoch`` (0-based) starts with ``done`` of its steps already done (a resumed run)."""
        self._epoch = epoch
        if self.live:
            self._bar = tqdm(
                total=self.steps_per_epoch,
                initial=done,
                desc=f"epoch {epoch + 1}/{self.epochs}",
                leave=False,
                dynamic_ncols=True,
            )

    def advance(self) -> None:
        """One step done (the bar moves; no value is read)."""
        if self._bar is not None:
            self._bar.update(1)

    def values(self, step: int, total_steps: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        """The values read at a log step: on the bar, or as a plain line every few seconds."""
        if self._bar is not None:
            self._bar.set_postfix(loss=f"{loss:.3f}", acc=f"{accuracy:.3f}", samples_s=f"{samples_per_s:.0f}")
        elif self.enabled and time.monotonic() - self._last_line >= PLAIN_PROGRESS_INTERVAL_S:
            self._last_line = time.monotonic()
            self._write(
                f"epoch {self._epoch + 1}/{self.epochs} step {step}/{total_steps}: loss {loss:.4g}, "
                f"train accuracy {accuracy:.3f}, {samples_per_s:.0f} samples/s"
            )

    def end_epoch(
        self, epoch: int, train_loss: float, val_accuracy: float, lr: float | None, seconds: float
    ) -> None:
        """The line of a finished (or cut short) epoch ``epoch`` (1-based count of epochs done)."""
        self.close()
        rate = "no learning rate" if lr is None else f"lr {lr:.4g}"
        self._write(
            f"epoch {epoch}/{self.epochs}: train loss {train_loss:.4g}, val accuracy {val_accuracy:.4f}, "
            f"{rate}, {format_duration(seconds)}"
        )

    def summary(self, results: dict[str, Any], run_dir: Path) -> None:
        """The closing lines of a finished run."""
        self._write(
            f"trained {results['steps']} steps ({results['epochs']} epochs) in "
            f"{format_duration(results['train_seconds'])}: "
            f"val accuracy {results['val_accuracy']:.4f}, test accuracy {results['test_accuracy']:.4f}; "
            f"run directory {run_dir}"
        )

    def close(self) -> None:
        """Remove the bar (before a message that must start its own line)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def _write(self, line: str) -> None:
        if self.enabled:
            tqdm.write(line, file=sys.stderr)


def _other_optimizers(method: Method) -> list[torch.optim.Optimizer]:
    """The optimizers of :meth:`Method.optimizers` besides :attr:`Method.optimizer` (checkpointed apart)."""
    return [optimizer for optimizer in method.optimizers() if optimizer is not method.optimizer]


@dataclass
class _EpochTotals:
    """Sums over the checked steps of an epoch (host values, read at log and checkpoint steps)."""

    loss_sum: float = 0.0  # Σ loss · batch size
    correct: float = 0.0
    seen: int = 0


@dataclass
class RunComponents:
    """The data, model and method of a run, built identically for training, resuming and sweeping."""

    splits: DatasetSplits
    model: nn.Module
    method: Method
    device: torch.device
    dtype: torch.dtype


def build_run(
    recipe: Recipe, device: torch.device | None = None, *, initial_weights: bool = True
) -> RunComponents:
    """Load the data, create the model (seeded by the recipe) and let the method prepare it.

    Args:
        recipe: The validated recipe.
        device: Where the model goes (default: the recipe's ``train.device``).
        initial_weights: Load ``model.init_from`` before the method prepares the model. A finished run
            rebuilt to load its final checkpoint passes False, so it no longer needs the file it started from.
    """
    device = device or _device(recipe.train.device)
    dtype = DTYPES[recipe.train.dtype]
    data = recipe.data
    try:
        builder = None if data.factory is None else resolve_factory(data.factory)
        splits = load_dataset(
            data.label,
            data_dir=data.data_dir,
            val_fraction=data.val_fraction,
            seed=recipe.seed,
            augment=data.augment,
            builder=builder,
            **data.options,
        )
    except FactoryImportError as err:
        raise RunBuildError(f"'data.factory': {err}") from err
    except (ValueError, TypeError) as err:  # malformed files, bad labels or shapes, unknown options
        raise RunBuildError(f"'data': dataset '{data.label}' cannot be used: {err}") from err
    except Exception as err:
        if data.factory is None:  # a built-in dataset's own failure is a bug, not the recipe's
            raise
        raise RunBuildError(
            f"'data': dataset '{data.label}' cannot be built: its factory raised {_one_line(err)}"
        ) from err
    torch.manual_seed(recipe.seed)
    try:
        model = build_model(*base_model(recipe, splits), label=recipe.model.label)
    except FactoryImportError as err:
        raise RunBuildError(f"'model.factory': {err}") from err
    except (ValueError, TypeError) as err:
        raise RunBuildError(f"'model': model '{recipe.model.label}' cannot be built: {err}") from err
    except SlimtrainError:
        raise
    except Exception as err:
        if recipe.model.factory is None:  # a registry model's own failure is a bug, not the recipe's
            raise
        raise RunBuildError(
            f"'model': model '{recipe.model.label}' cannot be built: its factory raised {_one_line(err)}"
        ) from err
    if initial_weights:  # model.init_from: before the method converts the layers
        load_init_weights(model, recipe.model)
    model = model.to(device=device, dtype=dtype)
    example_inputs = move_inputs(splits.train.inputs[:2], device, dtype)
    _check_fits_the_data(model, recipe, splits, example_inputs)
    method = get_method_class(recipe.method.name)(recipe.method_options(), recipe)
    method.example_inputs = example_inputs  # to trace the model with
    try:
        model = method.prepare(model)
    except (ValueError, TypeError, NotImplementedError) as err:  # layers the method cannot handle
        raise RunBuildError(
            f"'method': method '{method.name}' cannot prepare model '{recipe.model.label}': {err}"
        ) from err
    model = model.to(device=device, dtype=dtype)
    return RunComponents(splits=splits, model=model, method=method, device=device, dtype=dtype)


def _one_line(err: BaseException) -> str:
    """``Type: message`` on one line (torch's messages span several)."""
    text = one_line(err)
    return f"{type(err).__name__}: {text[:400]}{'...' if len(text) > 400 else ''}"


def _check_fits_the_data(
    model: nn.Module, recipe: Recipe, splits: DatasetSplits, example_inputs: ModelInputs
) -> None:
    """Refuse a model that cannot run on the data's inputs or gives fewer logits than the data has classes.

    One forward pass of a copy of ``example_inputs`` (two training inputs on the run's device and dtype; a
    model may edit its input in place), in eval mode (no
    running statistics move) and outside the random streams (the run's draws stay those of a run without
    the check). A model with uninitialized lazy layers is not run: the check would draw their weights.

    Raises:
        RunBuildError: Naming the model, the input shape and the logits shape the data needs.
    """
    if any(is_lazy(p) for p in model.parameters()):
        return
    inputs = map_tensors(torch.clone, example_inputs)
    first = input_tensors(inputs)[0]
    shape = "×".join(str(d) for d in first.shape)
    label = recipe.model.label
    streams = [first.device] if first.device.type == "cuda" else []
    try:
        with torch.random.fork_rng(devices=streams), eval_mode(model), torch.no_grad():
            logits = logits_of(call_model(model, inputs))
    except SlimtrainError as err:
        raise RunBuildError(f"'model': model '{label}': {err}") from err
    except Exception as err:
        raise RunBuildError(
            f"'model': model '{label}' cannot run on the dataset's inputs ({shape}): {_one_line(err)}"
        ) from err
    # More logits than classes train (the extra ones are never a target); fewer fail inside the loss.
    if logits.dim() != 2 or logits.shape[0] != len(first) or logits.shape[1] < splits.num_classes:
        raise RunBuildError(
            f"'model': model '{label}' returns logits of shape {tuple(logits.shape)} for inputs of shape "
            f"{shape}; the dataset '{recipe.data.label}' needs ({len(first)}, {splits.num_classes}) (one "
            f"logit per class of its {splits.num_classes})"
        )


def load_checkpoint_state(comp: RunComponents, state: dict[str, Any], recipe: Recipe, where: Path) -> None:
    """Load a checkpoint's method state and weights into a freshly built run.

    Raises:
        CheckpointError: The checkpoint does not fit the model as it is built now (its code or factory
            changed since the run was trained); the message names the model and the checkpoints.
    """
    try:
        comp.method.load_state_dict(state["method"], comp.model)
        comp.model.load_state_dict(state["model"])
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, KeyError, ValueError) as err:
        if isinstance(err, RuntimeError) and "CUDA" in str(err):  # the device failed, not the model
            raise
        raise CheckpointError(
            f"{where}: the checkpoint does not fit model '{recipe.model.label}' as it is built now: its "
            f"code changed since the run was trained; restore it, or train again ({_one_line(err)})"
        ) from err


def base_model(recipe: Recipe, splits: DatasetSplits) -> tuple[str | ModelFactory, dict[str, Any]]:
    """The base the recipe's model is built from and the keyword arguments it gets (those an export records).

    The base is ``model.name`` or the callable ``model.factory`` imports; the arguments are ``model.kwargs``
    with the dataset's ``num_classes``, ``in_channels`` and ``image_size`` where the base takes them
    (:func:`slimtrain.models.model_arguments`).

    Raises:
        FactoryImportError: ``model.factory`` cannot be imported.
    """
    channels, height, _ = splits.input_shape
    common = {"num_classes": splits.num_classes, "in_channels": channels, "image_size": height}
    model = recipe.model
    base = model.name if model.factory is None else resolve_factory(model.factory)
    assert base is not None  # the recipe names one of them
    return base, model_arguments(base, model.kwargs, common)


def run_directory(recipe: Recipe) -> Path:
    """Where a recipe's run writes its files: ``<output_dir>/<name>``."""
    return Path(recipe.output_dir) / recipe.name


# Keys that do not change what a run computes, so a run may be resumed or reused with other values:
# where files go, how progress is shown and logged, where it runs, and how it is evaluated afterwards
# (the keys the run identity leaves out, slimtrain.train.identity).
_NOT_COMPUTED = PRESENTATION_KEYS + EVALUATION_KEYS


def check_resumable(run_dir: str | Path, recipe: Recipe) -> None:
    """Refuse to resume or reuse the run in ``run_dir`` if it was trained from a different recipe.

    A run directory without a stored ``recipe.yaml`` passes. Only keys that change what is trained are
    compared (not, e.g., ``output_dir``, ``train.progress`` or the ``evaluation`` section).

    Raises:
        RecipeError: naming the directory and every key whose value differs (stored → requested).
    """
    stored_path = Path(run_dir) / "recipe.yaml"
    if not stored_path.exists():
        return
    try:
        tree = yaml.safe_load(stored_path.read_text())
    except yaml.YAMLError as err:
        raise RecipeError(f"{stored_path}: the stored recipe cannot be read ({err})") from err
    if not isinstance(tree, dict):
        raise RecipeError(f"{stored_path}: the stored recipe is not a mapping")
    stored = flatten_recipe(_with_resolved_options(_with_recipe_defaults(with_legacy_options(tree))))
    wanted = flatten_recipe(recipe.model_dump(mode="json"))
    differ = sorted(
        key
        for key in stored.keys() | wanted.keys()
        if stored.get(key) != wanted.get(key)
        and not any(key == k or key.startswith(k + ".") for k in _NOT_COMPUTED)
    )
    if differ:
        details = "; ".join(f"{k}: {stored.get(k)!r} → {wanted.get(k)!r}" for k in differ)
        raise RecipeError(
            f"{run_dir} holds a run of a different recipe ({details}); "
            "use another output directory or delete that run"
        )


def _with_recipe_defaults(tree: dict[str, Any]) -> dict[str, Any]:
    """The stored tree with the keys it lacks filled in by the current recipe schema's defaults.

    A run stored before a recipe key existed (``train.precision``, ``schedule.plateau``, ...) computed what
    that key's default computes, so it is the same recipe. A stored tree the schema now rejects is compared
    as stored (its keys then name what changed).
    """
    try:
        return recipe_from_dict(tree).model_dump(mode="json")
    except RecipeError:
        return tree


def _with_resolved_options(tree: dict[str, Any]) -> dict[str, Any]:
    """The stored tree with its method options filled in by the method's current schema.

    A run stored before its method gained an option lacks that key; with the option's default it computed
    the same thing, so only options that the schema rejects, or that differ once resolved, count as changed.
    """
    method = tree.get("method")
    if not isinstance(method, dict) or not isinstance(method.get("options", {}), dict):
        return tree
    try:
        options = resolve_method_options(method.get("name", "dense"), method.get("options", {}))
    except RecipeError:  # unknown method or rejected options: compare them as stored
        return tree
    return {**tree, "method": {**method, "options": options}}


class Trainer:
    """Trains one recipe.

    Args:
        recipe: the validated recipe.
        run_dir: output directory (default ``<output_dir>/<name>``).
        world: the process group (default: from ``torchrun``'s environment, or a single process).
    """

    def __init__(self, recipe: Recipe, run_dir: str | Path | None = None, world: World | None = None) -> None:
        self.recipe = recipe
        self.run_dir = Path(run_dir) if run_dir is not None else run_directory(recipe)
        self._init_sha256 = init_weights_sha256(recipe)  # the run identity's record of its starting weights
        if recipe.train.threads is not None:
            torch.set_num_threads(recipe.train.threads)
        device = _device(recipe.train.device)
        self.world = world or init_world(device)
        if device.type == "cuda":
            device = _device("cuda", self.world.local_rank)
        self.components = build_run(recipe, device)
        method = self.components.method
        if recipe.train.precision not in method.precisions:
            raise RecipeError(
                f"'train.precision': method '{method.name}' trains in {' or '.join(method.precisions)}, "
                f"not {recipe.train.precision}"
            )
        self.precision = MixedPrecision(recipe.train.precision, self.components.device)
        if recipe.train.compile:  # the forward pass only: names, state dicts and hooks stay the module's own
            self.components.model.compile()
        self.health = GradientHealth()
        self.checkpoints = CheckpointStore(self.run_dir / "checkpoints")
        train_split = self.components.splits.train
        full_batch = self.components.method.full_batch
        if full_batch and self.world.world_size > 1:
            raise RunBuildError(
                f"'method': method '{recipe.method.name}' is full-batch and runs in a single process, "
                f"not {self.world.world_size}"
            )
        # A full-batch method gets the whole split, in a fixed order and unaugmented, as one step per epoch.
        self.loader = BatchLoader(
            train_split,
            len(train_split) if full_batch else recipe.train.batch_size,
            shuffle=not full_batch,
            seed=recipe.seed,
            transform=None if full_batch else self.components.splits.augment,
            rank=self.world.rank,
            world_size=self.world.world_size,
            device=self.components.device,
            on_device=recipe.data.on_device,
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise RunBuildError(
                f"'train.batch_size': the training split of '{recipe.data.label}' "
                f"({len(self.components.splits.train)} samples) is too small for batch size "
                f"{recipe.train.batch_size} × {self.world.world_size} processes"
            )
        planned = recipe.train.epochs * self.steps_per_epoch
        self.total_steps = min(planned, recipe.train.max_steps or planned)
        self.components.method.steps_per_epoch = self.steps_per_epoch
        self.components.method.total_steps = self.total_steps
        self.schedule = LRSchedule(
            recipe.schedule, self.steps_per_epoch, self.total_steps, base_lr=recipe.optimizer.lr
        )
        self.epoch_totals = _EpochTotals()  # of the epoch under way; a mid-epoch checkpoint carries them
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.grad_evals = 0
        self.train_seconds = 0.0
        self.finalized = False  # restored from the final checkpoint: `finalize` already ran on these weights

    # -- files --------------------------------------------------------------------------------------------
    def _check_output_writable(self) -> None:
        """Fail before training when the output directory cannot be written."""
        # One probe per process: ranks sharing the directory must not delete each other's probe.
        probe = self.run_dir / f".write-test-{self.world.rank}-{os.getpid()}"
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as err:
            raise OSError(f"output directory {self.run_dir} is not writable: {err}") from err

    # -- state --------------------------------------------------------------------------------------------
    def _state(self) -> dict[str, Any]:
        method = self.components.method
        state = {
            "model": self.components.model.state_dict(),
            "optimizer": method.optimizer.state_dict() if method.optimizer is not None else {},
            "method": method.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "batch_in_epoch": self.batch_in_epoch,
            "grad_evals": self.grad_evals,
            "train_seconds": self.train_seconds,
            "rng_cpu": torch.get_rng_state(),
            "schedule": self.schedule.state_dict(),
            "epoch_totals": asdict(self.epoch_totals),
        }
        others = _other_optimizers(method)
        if others:  # a method with several optimizers: the ones besides `method.optimizer`, in order
            state["other_optimizers"] = [optimizer.state_dict() for optimizer in others]
        if self.precision.scaling:  # fp16: the loss scale and its growth tracker
            state["grad_scaler"] = self.precision.state_dict()
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _save(self, *, final: bool = False) -> None:
        if self.world.is_main:
            record = {INIT_SHA256_KEY: self._init_sha256} if self._init_sha256 else None
            self.checkpoints.save(self._state(), self.step, final=final, record=record)
        self.world.barrier()

    def _restore(self) -> bool:
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            return False
        state, entry = loaded
        self.finalized = bool(entry["final"])
        # the weights this run started from, as recorded then (the file may have changed since)
        self._init_sha256 = entry.get(INIT_SHA256_KEY, self._init_sha256)
        model, method = self.components.model, self.components.method
        load_checkpoint_state(self.components, state, self.recipe, self.checkpoints.directory)
        model.to(device=self.components.device, dtype=self.components.dtype)
        method.build_optimizer(model)
        if state["optimizer"]:
            method.optimizer.load_state_dict(state["optimizer"])
        others, saved = _other_optimizers(method), state.get("other_optimizers", [])
        if len(others) != len(saved):
            raise CheckpointError(
                f"{self.checkpoints.directory}: the checkpoint holds {len(saved)} optimizers besides the "
                f"method's main one, method '{method.name}' has {len(others)}"
            )
        for optimizer, optimizer_state in zip(others, saved, strict=True):
            optimizer.load_state_dict(optimizer_state)
        self.step, self.epoch = state["step"], state["epoch"]
        self.batch_in_epoch = state["batch_in_epoch"]
        self.grad_evals, self.train_seconds = state["grad_evals"], state["train_seconds"]
        self.schedule.load_state_dict(state.get("schedule", {}))
        self.epoch_totals = _EpochTotals(**state.get("epoch_totals", {}))
        self.precision.load_state_dict(state.get("grad_scaler", {}))
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return True

    # -- loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
        """Train to the end (or continue a killed run with ``resume=True``) and return the final metrics.

        A run directory holding a finished run is trained again only with ``overwrite=True``, which first
        deletes everything derived from the old run (:data:`slimtrain.train.identity.DERIVED_OUTPUTS`:
        checkpoints, results, sweeps, reports, plots, exports, TensorBoard logs). The final metrics carry
        the run identity (:mod:`slimtrain.train.identity`), also written to ``results.json``.

        SIGINT (Ctrl-C) or SIGTERM (e.g. a cluster's preemption) during training stops it at the next
        step boundary, after writing a checkpoint that ``resume=True`` continues from exactly; a second
        signal stops at once (the newest checkpoint already written is kept).

        Raises:
            TrainingDiverged: the loss became non-finite; the last good checkpoint is kept.
            KeyboardInterrupt: stopped by a signal; the message names it, the step and the checkpoint.
            BadInputError: the directory holds a finished run and neither ``resume`` nor ``overwrite`` is set.
        """
        self._check_output_writable()
        recipe, comp = self.recipe, self.components
        if resume:
            check_resumable(self.run_dir, recipe)
        else:
            self._start_afresh(overwrite)
        if self.world.is_main:
            atomic_write_text(self.run_dir / "recipe.yaml", recipe.to_yaml())
        resumed = resume and self._restore()
        if not resumed:
            torch.manual_seed(recipe.seed + 1)  # training randomness (dropout) independent of the init draw
            self.world.broadcast_module(comp.model)
            comp.method.build_optimizer(comp.model)
        if self.world.is_main:
            self.log = RunLog(self.run_dir, tensorboard=recipe.train.tensorboard)
            self.log.restart(self.step if resumed else None)
        comp.model.train()
        # Built once: parameter objects survive rank changes; culprits are named afresh when a check fails.
        self._names = {id(p): name for name, p in comp.model.named_parameters()}
        self.health.clear()
        self._stop, self._stop_agreed = StopRequests(), False
        self._progress = TrainingProgress(
            recipe.train.progress and self.world.is_main, recipe.train.epochs, self.steps_per_epoch
        )
        try:
            with self._stop:
                while self.step < self.total_steps and self.epoch < recipe.train.epochs:
                    self._run_epoch()
                    if self._stop_requested():  # the epoch-end checkpoint is written
                        raise self._interrupted()
        finally:
            self._progress.close()  # an error's message must not be glued to the bar's line
        if not self.finalized:
            comp.method.finalize(comp.model)
            self.finalized = True
        results = self._final_results()
        self._save(final=True)
        identity = run_identity(self.run_dir, recipe)
        if identity is not None:  # the final checkpoint is listed (rank 0 wrote it before the barrier)
            results.update(identity.as_dict())
        if self.world.is_main:
            self.log.close()
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=1))
        self._progress.summary(results, self.run_dir)
        return results

    def _start_afresh(self, overwrite: bool) -> None:
        """Refuse a finished run's directory unless ``overwrite``; clear what the old run derived."""
        if is_finished(self.run_dir):
            if not overwrite:
                raise BadInputError(
                    f"{self.run_dir} holds a finished run; train with --overwrite to replace it (its "
                    "checkpoints, results, sweeps, reports, plots, exports and TensorBoard logs are "
                    "deleted), --resume to keep it, or --run-dir to train into another directory"
                )
            if self.world.is_main:
                remove_derived_outputs(self.run_dir)
        elif self.world.is_main:  # an unfinished run started over: its event files would pile up
            remove_derived_outputs(self.run_dir, ("tensorboard",))

    def _run_epoch(self) -> None:
        recipe, comp = self.recipe, self.components
        method, model = comp.method, comp.model
        self.loader.set_epoch(self.epoch)
        skip = self.batch_in_epoch
        self._progress.start_epoch(self.epoch, skip)
        # Per step only device tensors are kept (loss, correct count) with the host's batch size; they are
        # read, and the run checked for divergence, at log and checkpoint steps.
        window: list[tuple[torch.Tensor, torch.Tensor, int]] = []
        if not skip:
            self.epoch_totals = _EpochTotals()
        totals = self.epoch_totals
        tick = epoch_start = time.perf_counter()
        every = recipe.train.checkpoint_every_steps
        for index, (inputs, targets) in enumerate(self.loader):
            if index < skip:
                continue
            if self.step >= self.total_steps:
                break
            # Only floating inputs take the training dtype: token ids and masks stay integer.
            inputs = move_inputs(inputs, comp.device, comp.dtype, non_blocking=True)
            targets = targets.to(comp.device, non_blocking=True)
            # The factor this step trains with: the recipe's schedule, unless the method reshapes it.
            factor = method.lr_factor(self.step, self.schedule.factor(self.step))
            for optimizer in method.optimizers():  # none for gradient-free methods
                set_lr_factor(optimizer, factor)
            ctx = StepContext(
                step=self.step,
                epoch=self.epoch,
                total_steps=self.total_steps,
                world=self.world,
                parameter_names=self._names,
                precision=self.precision,
                health=self.health,
            )
            try:
                out = method.training_step(model, inputs, targets, ctx)
            except torch.linalg.LinAlgError as err:  # an SVD, QR or Cholesky of non-finite or singular data
                gradients = self.health.culprits(self._names)  # NaN gradients are the usual cause
                cause = f" after non-finite gradients in {', '.join(gradients[1])}" if gradients else ""
                raise self._diverged(f"a factorization failed{cause} ({err})", self.step) from err
            self.precision.update(f"method '{method.name}'")
            self.world.average_batchnorm_statistics(model)
            self.grad_evals += ctx.grad_evals
            self.step += 1
            self.batch_in_epoch = index + 1
            correct = (out.logits.argmax(dim=1) == targets).sum()
            window.append((out.loss.detach().reshape(()), correct, targets.numel()))
            self._progress.advance()
            log_step = (
                self.step % recipe.train.log_every_steps == 0 or self.batch_in_epoch == self.steps_per_epoch
            )
            mid_epoch = self.batch_in_epoch < self.steps_per_epoch  # else the epoch end checkpoints
            checkpoint_step = bool(every) and self.step % every == 0 and mid_epoch
            # A single process checks at once when asked to stop; ranks of a run vote at their next check.
            asked = not self.world.distributed and self._stop.signal_name is not None
            if log_step or checkpoint_step or asked or self.step >= self.total_steps:
                loss = self._check(window, totals)
                if log_step:
                    self._log_step(loss, factor, totals, time.perf_counter() - tick)
            # the request as seen before the check: a signal arriving since then waits for the next check,
            # so no checkpoint holds weights that were not checked
            stop = mid_epoch and (self._stop_agreed if self.world.distributed else asked)
            if stop or checkpoint_step:
                self.train_seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                self._save()
            if stop:
                raise self._interrupted()
        self.train_seconds += time.perf_counter() - tick
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        val = evaluate(model, comp.splits.val, device=comp.device, dtype=comp.dtype)
        train_loss = totals.loss_sum / max(totals.seen, 1)
        row = {
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": train_loss,
            "train_accuracy": totals.correct / max(totals.seen, 1),
            "val_accuracy": val["accuracy"],
            "val_loss": val["loss"],
            "train_seconds": self.train_seconds,
            **{
                k: json.dumps(v) if not isinstance(v, int | float) else v
                for k, v in method.describe(model).items()
            },
        }
        if self.world.is_main:
            self.log.append("epochs", row)
        optimizers = method.optimizers()
        lr = float(optimizers[0].param_groups[0]["lr"]) if optimizers else None
        self._progress.end_epoch(
            self.epoch if self.batch_in_epoch == 0 else self.epoch + 1,
            train_loss,
            val["accuracy"],
            lr,
            time.perf_counter() - epoch_start,
        )
        if self.batch_in_epoch == 0:  # the epoch was completed, not cut short by max_steps
            method.on_epoch_end(model, self.epoch)
            # train_loss is averaged over the processes at each check, so every rank takes the same cut
            self.schedule.end_epoch(train_loss)
        self._save()

    def _check(self, window: list[tuple[torch.Tensor, torch.Tensor, int]], totals: _EpochTotals) -> float:
        """Read the steps of ``window`` in one host read, add them to ``totals``, and stop on divergence.

        Checks that every loss, every recorded gradient and every weight is finite (the step is at most
        a log interval old, and no checkpoint has been written since); in a data-parallel run the values
        are averaged over the processes, which also agree on a stop request here. Returns the last step's
        loss and empties ``window``.

        Raises:
            TrainingDiverged: naming the first bad step found, the non-finite parameters and the last good
                checkpoint.
        """
        device = self.components.device
        losses = torch.stack([loss.to(device=device, dtype=torch.float64) for loss, _, _ in window])
        batches = [batch for _, _, batch in window]
        weights = torch.tensor(batches, dtype=torch.float64).to(device, non_blocking=True)
        params = list(self.components.model.parameters())
        asked = torch.tensor(float(self._stop.signal_name is not None), dtype=torch.float64)
        values = torch.stack(
            [
                losses[-1],
                (losses * weights).sum(),
                torch.stack([correct for _, correct, _ in window]).sum().to(torch.float64),
                self.health.flag(device),
                (~finite_flags(params).all()).to(torch.float64) if params else losses.new_zeros(()),
                asked.to(device),
            ]
        )
        last_loss, loss_sum, correct, bad_gradient, bad_weights, vote = self.world.all_reduce_mean(
            values
        ).tolist()
        self._stop_agreed = vote > 0
        first = self.step - len(window)
        if bad_gradient or not math.isfinite(loss_sum) or bad_weights:
            problems = []  # (step, problem): the earliest is reported
            found = self.health.culprits({id(p): n for n, p in self.components.model.named_parameters()})
            if found is not None:
                problems.append((found[0], f"non-finite gradient in {', '.join(found[1])}"))
            bad_losses = [(first + i, x) for i, x in enumerate(losses.tolist()) if not math.isfinite(x)]
            if bad_losses:
                problems.append((bad_losses[0][0], f"loss is {bad_losses[0][1]}"))
            if problems:
                step, problem = min(problems, key=lambda item: item[0])
                raise self._diverged(problem, step)
            raise self._diverged("the weights became non-finite", first, self.step - 1)
        self.health.clear()
        window.clear()
        totals.loss_sum += loss_sum
        totals.correct += correct
        totals.seen += sum(batches)
        return last_loss

    def _log_step(self, loss: float, factor: float, totals: _EpochTotals, elapsed: float) -> None:
        """Write a ``train_log`` row and show the values read by the check of this log step."""
        row = {
            "step": self.step,
            "epoch": self.epoch + 1,
            "loss": loss,
            "train_accuracy": totals.correct / max(totals.seen, 1),
            "lr_factor": factor,
            "samples_per_s": totals.seen * self.world.world_size / max(elapsed, 1e-9),
            "grad_evals": self.grad_evals,
        }
        self._progress.values(self.step, self.total_steps, loss, row["train_accuracy"], row["samples_per_s"])
        if self.world.is_main:
            self.log.append("train_log", row)

    def _stop_requested(self) -> bool:
        """Whether to stop at this step boundary (all processes of a data-parallel run agree)."""
        if self.world.distributed:
            return self._stop_agreed
        return self._stop.signal_name is not None

    def _interrupted(self) -> KeyboardInterrupt:
        """The interruption ending :meth:`fit` after a stop request; names the signal and the checkpoint."""
        if self.world.is_main:
            self.log.close()
        last = self.checkpoints.entries()
        where = self.checkpoints.directory / last[-1]["file"] if last else "none"
        name = self._stop.signal_name or "a signal to another process of the run"
        return KeyboardInterrupt(
            f"stopped by {name} after step {self.step} of {self.total_steps}; checkpoint written: {where}"
        )

    def _diverged(self, problem: str, first: int, last: int | None = None) -> TrainingDiverged:
        """The error stopping the run at step ``first`` (or between ``first`` and ``last``).

        It names the non-finite parameters and the last good checkpoint.
        """
        self._progress.close()
        model = self.components.model
        bad = nonfinite_parameters(model)
        entries = self.checkpoints.entries()
        where = self.checkpoints.directory / entries[-1]["file"] if entries else "none written yet"
        return TrainingDiverged(
            f"{problem} {_steps(first, first if last is None else last)} (epoch {self.epoch + 1}, "
            f"method '{self.components.method.name}')"
            f"; non-finite parameters: {', '.join(bad) if bad else 'none'}; training stopped. "
            f"Last good checkpoint: {where}"
        )

    def _final_results(self) -> dict[str, Any]:
        comp = self.components
        val = evaluate(comp.model, comp.splits.val, device=comp.device, dtype=comp.dtype)
        test = evaluate(comp.model, comp.splits.test, device=comp.device, dtype=comp.dtype)
        return {
            "recipe": self.recipe.name,
            "method": comp.method.name,
            "seed": self.recipe.seed,
            "steps": self.step,
            "epochs": self.epoch,
            "grad_evals": self.grad_evals,
            "world_size": self.world.world_size,
            "train_seconds": self.train_seconds,
            "val_accuracy": val["accuracy"],
            "test_accuracy": test["accuracy"],
            # A model's own frozen tensors (requires_grad=False): the methods leave them alone.
            "params_frozen": sum(p.numel() for p in comp.model.parameters() if not p.requires_grad),
            **comp.method.describe(comp.model),
        }


def train(
    recipe: Recipe, run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False
) -> dict[str, Any]:
    """Train ``recipe`` (see :class:`Trainer`) and return its final metrics."""
    return Trainer(recipe, run_dir).fit(resume=resume, overwrite=overwrite)
