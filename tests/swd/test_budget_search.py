"""The budget threshold of the default channel model, searched on the device: the same value as a brute-force
scan of every candidate, for any γ (ties and signs included) and any number of probes per round, with no
host read.
"""

from __future__ import annotations

import math

import pytest
import torch
from benchmarks.harness import HostReads
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn.modules.batchnorm import _BatchNorm

from slimtrain.errors import UnsupportedModelError
from slimtrain.models import create_model
from slimtrain.swd import (
    ChannelSelection,
    GroupGates,
    budget_threshold,
    budget_threshold_tensor,
    parameter_budget,
)

_MODEL = create_model("resnet8", num_classes=10, in_channels=1, image_size=8, width=4, shortcut="B")
_GATES = GroupGates.from_model(_MODEL, torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0)))


def _set_gammas(seed: int, levels: int) -> None:
    """γ in [-1, 1]; with ``levels`` > 0 only that many distinct magnitudes, so that many channels tie."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in _MODEL.modules():
            if isinstance(m, _BatchNorm):
                gamma = torch.rand(m.weight.shape, generator=generator) * 2 - 1
                m.weight.copy_(torch.round(gamma * levels) / levels if levels else gamma)


def _brute_force(target: int) -> float:
    """The smallest candidate whose count meets the budget, scanning all of them (+inf: none does)."""
    allowed = parameter_budget(_MODEL, target)
    for candidate in _GATES.scores(_MODEL).sort()[0].tolist():
        if _GATES.parameter_count(_MODEL, candidate) <= allowed:
            return candidate
    return math.inf


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    levels=st.sampled_from([0, 1, 2, 4]),
    target=st.integers(0, 999),
    probes=st.sampled_from([1, 2, 3, 8, 64, 10**6]),
)
def test_device_search_equals_a_scan_of_every_candidate(seed, levels, target, probes):
    """``budget_threshold_tensor`` returns the smallest candidate meeting the budget, whatever the probes."""
    _set_gammas(seed, levels)
    expected = _brute_force(target)
    assert float(budget_threshold_tensor(_GATES, _MODEL, target, probes=probes)) == expected
    if _GATES.parameter_count(_MODEL, math.inf) <= parameter_budget(_MODEL, target):
        assert budget_threshold(_GATES, _MODEL, target) == expected  # +inf: every group keeps one channel
    else:  # what no gate can remove exceeds the budget: refused
        with pytest.raises(UnsupportedModelError, match="choose a smaller target"):
            budget_threshold(_GATES, _MODEL, target)


def test_selection_reads_nothing_on_the_host():
    """Selecting channels (the threshold search, the masks) makes no host read; the float threshold, one."""
    _set_gammas(3, 0)
    selection = ChannelSelection(_MODEL, 500, penalize_filters=True, graph=_GATES)
    with HostReads() as counted:
        selection.select(_MODEL)
        selection.keep_masks(_MODEL)
    assert counted.counts == {}
    with HostReads() as counted:
        selection.threshold(_MODEL)
    assert counted.counts == {"item": 1}


def test_an_unreachable_target_is_refused_when_the_selection_is_built():
    """The part no gate can remove does not depend on γ: the corrected selection refuses it at once."""
    with pytest.raises(UnsupportedModelError, match="choose a smaller target"):
        ChannelSelection(_MODEL, 999, graph=_GATES)
