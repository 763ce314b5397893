"""Shared test configuration: deterministic hypothesis profiles and a fixed torch seed per test."""

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

# `ci` (the default) is derandomized so the suite gives the same verdict on every run;
# `dev` explores new examples (HYPOTHESIS_PROFILE=dev make test).
settings.register_profile(
    "ci", derandomize=True, max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", max_examples=200, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# One thread: the suite is many small ops, for which threading costs more than it gives on 2 cores.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed_torch():
    torch.manual_seed(0)
