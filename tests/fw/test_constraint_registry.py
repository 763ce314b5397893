"""The constraint-set registry: filled by subclassing, read by constraint_from_config and the builder."""

import itertools
import math

import pytest
import torch
from torch import nn

from slimtrain.errors import BadInputError, UnknownNameError
from slimtrain.fw import ConstraintSet, LpBall, build_constraints, constraint_from_config
from slimtrain.fw.base import CONSTRAINT_SETS
from slimtrain.fw.builder import SETS_BY_MODE

BUILT_IN = {
    "group_k_support",
    "k_sparse",
    "k_support",
    "lp_ball",
    "nuclear",
    "spectral_k_sparse",
    "spectral_k_support",
}


@pytest.fixture
def scratch_registry():
    """Sets defined by a test are unregistered afterwards."""
    with CONSTRAINT_SETS.scratch():
        yield


def test_every_built_in_set_is_registered_under_its_name():
    """Each entry is a ConstraintSet class whose ``name`` is its key; all of slimtrain's sets are there."""
    assert BUILT_IN <= set(CONSTRAINT_SETS.names())
    for name, cls in CONSTRAINT_SETS.items():
        assert issubclass(cls, ConstraintSet) and cls.name == name


def test_unknown_or_missing_type_is_bad_input_listing_the_sets():
    """An unknown ``type`` raises UnknownNameError listing the registered sets; a missing one says so."""
    with pytest.raises(UnknownNameError) as info:
        constraint_from_config({"type": "l0_ball", "n": 3, "radius": 1.0})
    assert (
        str(info.value)
        == f"unknown constraint set 'l0_ball'; registered: {', '.join(CONSTRAINT_SETS.names())}"
    )
    with pytest.raises(
        BadInputError, match=r"needs a 'type' key; registered constraint sets: group_k_support"
    ):
        constraint_from_config({"n": 3, "radius": 1.0})


def test_a_subclass_with_a_name_is_registered_and_rebuilt(scratch_registry):
    """Defining a named subclass registers it (rebuildable from its config); an unnamed one inherits no entry;
    another class cannot silently take a registered name.
    """

    class ClippedBall(LpBall):
        name = "clipped_ball"

    class Unnamed(LpBall):
        pass

    assert CONSTRAINT_SETS.get("clipped_ball") is ClippedBall and CONSTRAINT_SETS.get("lp_ball") is LpBall
    twin = constraint_from_config(ClippedBall(4, 2.0, p=1.0).to_config())
    assert type(twin) is ClippedBall and twin == ClippedBall(4, 2.0, p=1.0)
    assert type(constraint_from_config(Unnamed(4, 2.0).to_config())) is LpBall
    with pytest.raises(ValueError, match="constraint set named 'lp_ball' is already registered"):

        class Impostor(LpBall):
            name = "lp_ball"

    assert CONSTRAINT_SETS.get("lp_ball") is LpBall


def test_the_builders_sets_are_registered_and_cover_the_built_in_ones():
    """Every set a mode of build_constraints offers is a registered name; every built-in set is offered."""
    offered = set(itertools.chain.from_iterable(SETS_BY_MODE.values()))
    assert offered <= set(CONSTRAINT_SETS.names())
    assert offered == BUILT_IN


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3)
        self.fc = nn.Linear(6, 4)


@pytest.mark.parametrize(
    ("mode", "name"), [(mode, name) for mode, names in SETS_BY_MODE.items() for name in names]
)
def test_builder_puts_the_registered_class_on_structured_tensors(mode, name):
    """build_constraints gives the registry's class for the named set (an L2 ball on the other tensors)."""
    groups = build_constraints(_Net(), mode, constraint=name, k=0.5, radius=1.5)
    sets = {n: c for g in groups for n, c in zip(g["names"], g["constraint"], strict=True)}
    structured = {"conv.weight"} if mode != "unstructured" else set(sets)
    for tensor, c in sets.items():
        expected = CONSTRAINT_SETS.get(name if tensor in structured else "lp_ball")
        assert type(c) is expected and c.radius == 1.5, tensor
        if tensor not in structured:
            assert c.p == 2.0
    conv = sets["conv.weight"]
    assert conv.numel == 6 * 3 * 3 * 3
    if hasattr(conv, "k"):
        assert conv.k == max(1, math.floor(0.5 * conv.k_max))
    assert conv.is_feasible(conv.lmo(torch.randn(6, 3, 3, 3, dtype=torch.float64)))
