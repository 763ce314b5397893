"""The sparsity core: each score × selection rule agrees with a sort-based oracle; masks copy or act in place.

Values are small integers, so ties are frequent and every score is exact in float64.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from slimtrain.pruning import (
    CubicSchedule,
    ExponentialSchedule,
    IterativeSchedule,
    MaskSet,
    batchnorm_gamma_scores,
    cubic_sparsity,
    group_norm_scores,
    iterative_targets,
    magnitude_scores,
    removal_count,
    removal_masks,
)

SCORES = ("magnitude", "group_norm", "batchnorm_gamma")
RULES = (("exact", "first"), ("exact", "last"), ("below_sorted", "first"), ("below_quantile", "first"))
SCOPES = ("global", "layerwise")


def _scores(kind: str, sizes: list[int], values: list[int]) -> tuple[dict, list[list[int]]]:
    """Scores of tensors built from ``values`` (signed ints), and the exact scores computed by hand."""
    scores, expected = {}, []
    offset = 0
    for i, size in enumerate(sizes):
        chunk = values[offset : offset + size]
        offset += size
        if kind == "magnitude":
            t = torch.tensor(chunk, dtype=torch.float64).view(size, 1)
            scores[f"t{i}"] = magnitude_scores({"t": t}).view(t.shape)
            expected.append([abs(v) for v in chunk])
        elif kind == "group_norm":
            # Two input columns per filter, the second the negated first: the L1 norm is 2|v|.
            w = torch.tensor([[v, -v] for v in chunk], dtype=torch.float64).view(size, 2, 1, 1)
            scores[f"t{i}"] = group_norm_scores(w, dim=0, ord=1)
            expected.append([2 * abs(v) for v in chunk])
        else:
            bn = nn.BatchNorm2d(size).double()
            with torch.no_grad():
                bn.weight.copy_(torch.tensor(chunk, dtype=torch.float64))
            scores[f"t{i}"] = batchnorm_gamma_scores(bn)
            expected.append([abs(v) for v in chunk])
    return scores, expected


def _oracle(values: list[int], sparsity: Fraction, rule: str, ties: str) -> list[bool]:
    """Removed entries by sorting (the rules as the papers' code states them)."""
    n = len(values)
    k = removal_count(n, sparsity)
    if rule == "exact":
        key = (lambda i: (values[i], i)) if ties == "first" else (lambda i: (values[i], -i))
        chosen = set(sorted(range(n), key=key)[:k])
        return [i in chosen for i in range(n)]
    if rule == "below_sorted":
        threshold = sorted(values)[k] if k < n else float("inf")
    else:
        threshold = np.quantile(np.array(values, dtype=np.float64), float(sparsity), method="linear")
    return [v < threshold for v in values]


@pytest.mark.parametrize("scope", SCOPES)
@pytest.mark.parametrize(("rule", "ties"), RULES, ids=lambda v: str(v))
@pytest.mark.parametrize("kind", SCORES)
@given(
    sizes=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    data=st.data(),
    eighths=st.integers(0, 8),
)
def test_selection_agrees_with_the_sort_oracle(kind, rule, ties, scope, sizes, data, eighths) -> None:
    """Every score × rule × scope removes exactly the oracle's entries; ``exact`` removes ⌊s·n⌋ (per tensor
    when layerwise), every removed score ≤ every kept one, and ties go by position as ``ties`` says.
    """
    values = data.draw(st.lists(st.integers(-3, 3), min_size=sum(sizes), max_size=sum(sizes)))
    sparsity = Fraction(eighths, 8)
    scores, expected = _scores(kind, sizes, values)
    removed = removal_masks(scores, sparsity, scope=scope, rule=rule, ties=ties)
    assert list(removed) == list(scores)
    got = [removed[name].reshape(-1).tolist() for name in scores]
    if scope == "global":
        flat = [v for chunk in expected for v in chunk]
        assert [r for chunk in got for r in chunk] == _oracle(flat, sparsity, rule, ties)
    else:
        assert got == [_oracle(chunk, sparsity, rule, ties) for chunk in expected]
    if rule == "exact":
        groups = [[v for chunk in expected for v in chunk]] if scope == "global" else expected
        masks = [[r for chunk in got for r in chunk]] if scope == "global" else got
        for vals, mask in zip(groups, masks, strict=True):
            assert sum(mask) == removal_count(len(vals), sparsity)
            gone = [v for v, r in zip(vals, mask, strict=True) if r]
            kept = [v for v, r in zip(vals, mask, strict=True) if not r]
            assert not gone or not kept or max(gone) <= min(kept)


@pytest.mark.parametrize("ties", ["first", "last"])
@given(values=st.lists(st.integers(0, 2), min_size=1, max_size=30), data=st.data())
def test_a_count_budget_removes_exactly_that_many(ties, values, data) -> None:
    """``count=k`` removes exactly k entries globally, whatever the ties, and the same as the stable sort."""
    k = data.draw(st.integers(0, len(values)))
    scores = {"a": torch.tensor(values, dtype=torch.float64)}
    removed = removal_masks(scores, count=k, ties=ties)["a"]
    assert int(removed.sum()) == k
    assert removed.tolist() == _oracle(values, Fraction(k, len(values)), "exact", ties)


def test_bad_selection_options_are_refused() -> None:
    """Neither or both of sparsity/count, a layerwise count, an unknown option, a bad count: ValueError."""
    scores = {"a": torch.arange(4.0)}
    for kwargs in (
        {},
        {"sparsity": 0.5, "count": 1},
        {"count": 1, "scope": "layerwise"},
        {"sparsity": 0.5, "rule": "median"},
        {"sparsity": 0.5, "scope": "channel"},
        {"sparsity": 0.5, "ties": "random"},
        {"count": 5},
        {"count": 1, "rule": "below_quantile"},
    ):
        with pytest.raises(ValueError):
            removal_masks(scores, **kwargs)


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


@given(bits=st.lists(st.booleans(), min_size=24, max_size=24))
def test_copy_and_in_place_give_the_same_model_and_only_in_place_mutates(bits) -> None:
    """``applied_to_copy`` leaves the model untouched and returns weights equal to the in-place ``apply_``;
    masked-out entries are zero, the others unchanged, parameters without a mask unchanged.
    """
    net = _net()
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    keep = torch.tensor(bits).view(6, 4)
    masks = MaskSet(net, {"0.weight": keep})
    copy = masks.applied_to_copy()
    assert copy is not net
    for name, p in net.named_parameters():
        assert torch.equal(p, before[name])
    masks.apply_()
    copied = dict(copy.named_parameters())
    for name, p in net.named_parameters():
        assert torch.equal(copied[name], p)
        expected = before[name] * keep if name == "0.weight" else before[name]
        assert torch.equal(p, expected)


def test_tied_alias_and_computed_weight_are_masked_in_copy_and_in_place() -> None:
    """A tied weight named by its second alias and a ``weight_norm`` weight are masked the same way by
    ``applied_to_copy`` and ``apply_``; the computed weight becomes a plain parameter holding the masked
    effective value.
    """
    net = nn.Sequential(nn.Linear(3, 3, bias=False), nn.Linear(3, 3, bias=False), nn.Linear(3, 2))
    net[1].weight = net[0].weight
    net[2] = nn.utils.parametrizations.weight_norm(net[2])
    effective = net[2].weight.detach().clone()
    keep_tied = torch.eye(3, dtype=torch.bool)
    keep_norm = torch.tensor([[True, False, True], [False, True, False]])
    masks = MaskSet(net, {"1.weight": keep_tied, "2.weight": keep_norm})
    tied = net[0].weight.detach().clone()
    copy = masks.applied_to_copy()
    assert nn.utils.parametrize.is_parametrized(net[2])
    for model in (copy, net):
        if model is net:
            masks.apply_()
        assert model[0].weight is model[1].weight
        assert torch.equal(model[0].weight, tied * keep_tied)
        assert isinstance(model[2].weight, nn.Parameter)
        assert torch.allclose(model[2].weight, effective * keep_norm)


def test_mask_set_refuses_unknown_names_and_wrong_shapes() -> None:
    """A name that is neither a parameter nor a computed weight (a buffer included): KeyError; a mask of
    another shape: ValueError.
    """
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with pytest.raises(KeyError):
        MaskSet(net, {"0.nothing": torch.ones(2, 2, dtype=torch.bool)})
    with pytest.raises(KeyError):
        MaskSet(net, {"1.running_mean": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError):
        MaskSet(net, {"0.weight": torch.ones(3, dtype=torch.bool)})


def test_attached_masks_hold_after_every_step() -> None:
    """``attach`` re-applies the masks in place after each optimizer step, despite momentum."""
    net = _net()
    keep = torch.rand(6, 4) > 0.5
    masks = MaskSet(net, {"0.weight": keep})
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    masks.apply_()
    handle = masks.attach(opt)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(5, 4)).square().sum().backward()
        opt.step()
        assert not net[0].weight[~keep].any()
    handle.remove()
    assert masks.sparsity() == pytest.approx(float((~keep).sum()) / keep.numel())


def test_schedules_are_frozen_pure_functions_of_the_step() -> None:
    """Schedules are frozen dataclasses (no field can be reassigned); the function forms equal them."""
    cubic = CubicSchedule(0.9, 10, 110, frequency=5)
    for schedule, field in ((cubic, "end_step"), (IterativeSchedule(900, 3), "target")):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(schedule, field, 1)
    exponential = ExponentialSchedule(1, 100, 10)
    with pytest.raises(dataclasses.FrozenInstanceError):
        exponential.a_max = 1.0
    assert isinstance(exponential.a_min, float)
    assert (
        exponential(0) == 1.0
        and exponential(10) == pytest.approx(100.0)
        and exponential(99) == exponential(10)
    )
    assert [cubic(t) for t in range(130)] == [cubic_sparsity(t, 0.9, 10, 110, 0.0, 5) for t in range(130)]
    assert IterativeSchedule(900, 4).targets == iterative_targets(900, 4) == [225, 450, 675, 900]
