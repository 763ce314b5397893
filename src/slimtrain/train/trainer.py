"""The training loop every method plugs into.

One loop for all methods: data sharded across processes, the method's ``training_step`` per batch (free to
run several passes), the learning-rate schedule applied once before each step to every optimizer the method
declares (:meth:`~slimtrain.train.method.Method.optimizers`, at the factor of
:meth:`~slimtrain.train.method.Method.lr_factor`), CSV logs (and TensorBoard when installed),
a progress bar, atomic checkpoints with everything needed to resume bit-exactly, and a clean stop on a
non-finite loss that leaves the last good checkpoint intact.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from tqdm import tqdm

from slimtrain.data import BatchLoader, DatasetSplits, load_dataset
from slimtrain.errors import (
    CheckpointError,
    NonFiniteGradientError,
    RecipeError,
    RunBuildError,
    TrainingDiverged,
)
from slimtrain.io import atomic_write_text
from slimtrain.models import create_model
from slimtrain.train.checkpoint import CheckpointStore
from slimtrain.train.config import Recipe, resolve_method_options
from slimtrain.train.distributed import World, init_world, resolve_device
from slimtrain.train.evaluate import evaluate
from slimtrain.train.method import Method, StepContext, get_method_class
from slimtrain.train.run_log import RunLog
from slimtrain.train.schedule import LRSchedule, set_lr_factor

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the parameters of ``model`` holding NaN or infinite values (one device sync)."""
    named = list(model.named_parameters())
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named])
    if bool(finite.all()):
        return []
    return [name for (name, _), ok in zip(named, finite.tolist(), strict=True) if not ok]


def _other_optimizers(method: Method) -> list[torch.optim.Optimizer]:
    """The optimizers of :meth:`Method.optimizers` besides :attr:`Method.optimizer` (checkpointed apart)."""
    return [optimizer for optimizer in method.optimizers() if optimizer is not method.optimizer]


@dataclass
class RunComponents:
    """The data, model and method of a run, built identically for training, resuming and sweeping."""

    splits: DatasetSplits
    model: nn.Module
    method: Method
    device: torch.device
    dtype: torch.dtype


def build_run(recipe: Recipe, device: torch.device | None = None) -> RunComponents:
    """Load the data, create the model (seeded by the recipe) and let the method prepare it."""
    device = device or resolve_device(recipe.train.device)
    dtype = DTYPES[recipe.train.dtype]
    data = recipe.data
    try:
        splits = load_dataset(
            data.name,
            data_dir=data.data_dir,
            val_fraction=data.val_fraction,
            seed=recipe.seed,
            augment=data.augment,
            **data.options,
        )
    except (ValueError, TypeError) as err:  # malformed files, bad labels or shapes, unknown options
        raise RunBuildError(f"'data': dataset '{data.name}' cannot be used: {err}") from err
    channels, height, _ = splits.input_shape
    torch.manual_seed(recipe.seed)
    try:
        model = create_model(
            recipe.model.name,
            num_classes=splits.num_classes,
            in_channels=channels,
            image_size=height,
            **recipe.model.kwargs,
        )
    except (ValueError, TypeError) as err:
        raise RunBuildError(f"'model': model '{recipe.model.name}' cannot be built: {err}") from err
    model = model.to(device=device, dtype=dtype)
    method = get_method_class(recipe.method.name)(recipe.method_options(), recipe)
    try:
        model = method.prepare(model)
    except (ValueError, TypeError, NotImplementedError) as err:  # layers the method cannot handle
        raise RunBuildError(
            f"'method': method '{method.name}' cannot prepare model '{recipe.model.name}': {err}"
        ) from err
    model = model.to(device=device, dtype=dtype)
    return RunComponents(splits=splits, model=model, method=method, device=device, dtype=dtype)


def run_directory(recipe: Recipe) -> Path:
    """Where a recipe's run writes its files: ``<output_dir>/<name>``."""
    return Path(recipe.output_dir) / recipe.name


# Keys that do not change what a run computes, so a run may be resumed or reused with other values:
# where files go, how progress is shown and logged, where it runs, and how it is evaluated afterwards.
_NOT_COMPUTED = (
    "output_dir",
    "train.progress",
    "train.tensorboard",
    "train.log_every_steps",
    "train.checkpoint_every_steps",
    "train.device",
    "train.threads",
    "evaluation",
)


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
    stored = _flatten(_with_resolved_options(tree))
    wanted = _flatten(recipe.model_dump(mode="json"))
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


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted keys of a recipe tree; a method's ``options`` stay one value."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and key != "options":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


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
        if recipe.train.threads is not None:
            torch.set_num_threads(recipe.train.threads)
        device = resolve_device(recipe.train.device)
        self.world = world or init_world(device)
        if device.type == "cuda":
            device = resolve_device("cuda", self.world.local_rank)
        self.components = build_run(recipe, device)
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
        )
        self.steps_per_epoch = len(self.loader)
        if self.steps_per_epoch == 0:
            raise RunBuildError(
                f"'train.batch_size': the training split of '{recipe.data.name}' "
                f"({len(self.components.splits.train)} samples) is too small for batch size "
                f"{recipe.train.batch_size} × {self.world.world_size} processes"
            )
        planned = recipe.train.epochs * self.steps_per_epoch
        self.total_steps = min(planned, recipe.train.max_steps or planned)
        self.components.method.steps_per_epoch = self.steps_per_epoch
        self.components.method.total_steps = self.total_steps
        self.schedule = LRSchedule(recipe.schedule, self.steps_per_epoch, self.total_steps)
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
        }
        others = _other_optimizers(method)
        if others:  # a method with several optimizers: the ones besides `method.optimizer`, in order
            state["other_optimizers"] = [optimizer.state_dict() for optimizer in others]
        if torch.cuda.is_available():
            state["rng_cuda"] = torch.cuda.get_rng_state_all()
        return state

    def _save(self, *, final: bool = False) -> None:
        if self.world.is_main:
            self.checkpoints.save(self._state(), self.step, final=final)
        self.world.barrier()

    def _restore(self) -> bool:
        loaded = self.checkpoints.load_latest()
        if loaded is None:
            return False
        state, entry = loaded
        self.finalized = bool(entry["final"])
        model, method = self.components.model, self.components.method
        method.load_state_dict(state["method"], model)
        model.load_state_dict(state["model"])
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
        torch.set_rng_state(state["rng_cpu"])
        if "rng_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["rng_cuda"])
        return True

    # -- loop ---------------------------------------------------------------------------------------------
    def fit(self, resume: bool = False) -> dict[str, Any]:
        """Train to the end (or continue a killed run with ``resume=True``) and return the final metrics.

        Raises:
            TrainingDiverged: the loss became non-finite; the last good checkpoint is kept.
        """
        self._check_output_writable()
        recipe, comp = self.recipe, self.components
        if resume:
            check_resumable(self.run_dir, recipe)
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
        while self.step < self.total_steps and self.epoch < recipe.train.epochs:
            self._run_epoch()
        if not self.finalized:
            comp.method.finalize(comp.model)
            self.finalized = True
        results = self._final_results()
        self._save(final=True)
        if self.world.is_main:
            self.log.close()
            atomic_write_text(self.run_dir / "results.json", json.dumps(results, indent=1))
        return results

    def _run_epoch(self) -> None:
        recipe, comp = self.recipe, self.components
        method, model = comp.method, comp.model
        self.loader.set_epoch(self.epoch)
        skip = self.batch_in_epoch
        progress = tqdm(
            total=self.steps_per_epoch,
            initial=skip,
            desc=f"epoch {self.epoch + 1}/{recipe.train.epochs}",
            disable=not (recipe.train.progress and self.world.is_main),
            leave=False,
        )
        loss_sum, correct, seen = 0.0, 0, 0
        tick = time.perf_counter()
        for index, (inputs, targets) in enumerate(self.loader):
            if index < skip:
                continue
            if self.step >= self.total_steps:
                break
            inputs = inputs.to(device=comp.device, dtype=comp.dtype, non_blocking=True)
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
                parameter_names={id(p): name for name, p in model.named_parameters()},
            )
            try:
                out = method.training_step(model, inputs, targets, ctx)
            except NonFiniteGradientError as err:
                raise self._diverged(str(err)) from err
            except torch.linalg.LinAlgError as err:  # an SVD, QR or Cholesky of non-finite or singular data
                raise self._diverged(f"a factorization failed ({err})") from err
            self.world.average_batchnorm_statistics(model)
            if nonfinite_parameters(model):  # e.g. a closed-form update or a factor that became NaN/inf
                raise self._diverged("the step produced non-finite weights")
            loss = self.world.all_reduce_mean(out.loss.detach().to(torch.float64).reshape(1)).item()
            if not math.isfinite(loss):
                raise self._diverged(f"loss is {loss}")
            self.grad_evals += ctx.grad_evals
            self.step += 1
            self.batch_in_epoch = index + 1
            batch = targets.numel()
            loss_sum += loss * batch
            correct += (out.logits.argmax(dim=1) == targets).sum().item()
            seen += batch
            progress.update(1)
            if self.step % recipe.train.log_every_steps == 0 or self.batch_in_epoch == self.steps_per_epoch:
                elapsed = time.perf_counter() - tick
                row = {
                    "step": self.step,
                    "epoch": self.epoch + 1,
                    "loss": loss,
                    "train_accuracy": correct / max(seen, 1),
                    "lr_factor": factor,
                    "samples_per_s": seen * self.world.world_size / max(elapsed, 1e-9),
                    "grad_evals": self.grad_evals,
                }
                progress.set_postfix(
                    loss=f"{loss:.3f}",
                    acc=f"{row['train_accuracy']:.3f}",
                    samples_s=f"{row['samples_per_s']:.0f}",
                )
                if self.world.is_main:
                    self.log.append("train_log", row)
            every = recipe.train.checkpoint_every_steps
            if every and self.step % every == 0 and self.batch_in_epoch < self.steps_per_epoch:
                self.train_seconds += time.perf_counter() - tick
                tick = time.perf_counter()
                self._save()
        progress.close()
        self.train_seconds += time.perf_counter() - tick
        if self.batch_in_epoch >= self.steps_per_epoch:
            self.epoch += 1
            self.batch_in_epoch = 0
        val = evaluate(model, comp.splits.val, device=comp.device, dtype=comp.dtype)
        row = {
            "step": self.step,
            "epoch": self.epoch,
            "train_loss": loss_sum / max(seen, 1),
            "train_accuracy": correct / max(seen, 1),
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
        if self.batch_in_epoch == 0:  # the epoch was completed, not cut short by max_steps
            method.on_epoch_end(model, self.epoch)
        self._save()

    def _diverged(self, problem: str) -> TrainingDiverged:
        """The error stopping the run at this step; names non-finite layers and the last checkpoint."""
        model = self.components.model
        bad = nonfinite_parameters(model)
        last = self.checkpoints.entries()
        where = self.checkpoints.directory / last[-1]["file"] if last else "none written yet"
        return TrainingDiverged(
            f"{problem} at step {self.step} (epoch {self.epoch + 1}, method '{self.components.method.name}')"
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
            **comp.method.describe(comp.model),
        }


def train(recipe: Recipe, run_dir: str | Path | None = None, resume: bool = False) -> dict[str, Any]:
    """Train ``recipe`` (see :class:`Trainer`) and return its final metrics."""
    return Trainer(recipe, run_dir).fit(resume=resume)
