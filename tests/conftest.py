"""Shared test configuration: deterministic hypothesis profiles and a fixed torch seed per test."""

import os
import threading

import pytest
import torch
from hypothesis import HealthCheck, settings
from tqdm import tqdm

# `ci` (the default) is derandomized so the suite gives the same verdict on every run;
# `dev` explores new examples (HYPOTHESIS_PROFILE=dev make test).
settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Hugging Face models in the conformance suite are built from configs: nothing is downloaded, and the
# library's advice-level logging stays out of the test output.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

# One thread: the suite is many small ops, for which threading costs more than it gives on 2 cores.
torch.set_num_threads(1)


def _process_local_tqdm_lock() -> None:
    """Give tqdm a lock of this process only.

    tqdm's default class-wide lock is a multiprocessing semaphore, shared by every process forked from the
    test process. The kill tests SIGKILL forked children at arbitrary moments; one killed while it held
    that semaphore (every progress bar takes it, even a disabled one) left all later children, and the
    test process, blocked on it forever.
    """
    tqdm.set_lock(threading.RLock())


_process_local_tqdm_lock()
os.register_at_fork(after_in_child=_process_local_tqdm_lock)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)


class _Killed(Exception):
    """Stands in for the process being killed at a chosen step."""


@pytest.fixture
def train_until_killed():
    """Train ``recipe`` in ``run_dir`` and stop it as a kill would, just before step ``step`` runs.

    Returns the interrupted trainer; whatever checkpoints it wrote before the kill stay on disk.
    """
    from slimtrain.train.trainer import Trainer

    def run(recipe, run_dir, step: int):
        trainer = Trainer(recipe, run_dir)
        training_step = trainer.components.method.training_step

        def dies_at_step(model, inputs, targets, ctx):
            if ctx.step == step:
                raise _Killed
            return training_step(model, inputs, targets, ctx)

        trainer.components.method.training_step = dies_at_step
        with pytest.raises(_Killed):
            trainer.fit()
        return trainer

    return run
