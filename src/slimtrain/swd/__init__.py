"""Selective Weight Decay (Tessier et al., arXiv:2011.10520): continuous pruning through a growing penalty.

- :class:`SelectiveWeightDecay`: the penalty, as a loss term or a gradient hook, with its per-step schedule.
- :class:`MagnitudeSelection`: unstructured selection (one global magnitude threshold).
- :class:`ChannelSelection`: structured selection (BatchNorm γ gates under a parameter budget).
- :class:`GroupGates`: the default channel model: DepGraph's coupled groups holding a BatchNorm, counted as
  the export removes them.
- :class:`ChannelGraph`: the reference's channel model: traced gates and analytic surviving-parameter count.
- :func:`budget_threshold`: the parameter-budget bisection; :func:`budget_threshold_tensor`: its corrected
  search on the device, for :class:`GroupGates` (no host read).
- :func:`prune_to_target`: final hard pruning at the target.
"""

from slimtrain.swd.budget import budget_threshold, budget_threshold_tensor, parameter_budget
from slimtrain.swd.channels import ChannelGraph
from slimtrain.swd.gate_groups import GroupGates
from slimtrain.swd.prune import prune_to_target
from slimtrain.swd.regularizer import SelectiveWeightDecay
from slimtrain.swd.schedule import ExponentialSchedule
from slimtrain.swd.selection import MagnitudeSelection, Selected, Selection, population_weights
from slimtrain.swd.stability import is_stable, stability_limit
from slimtrain.swd.structured import ChannelModelName, ChannelSelection, build_channel_model

__all__ = [
    "ChannelGraph",
    "ChannelModelName",
    "ChannelSelection",
    "ExponentialSchedule",
    "GroupGates",
    "MagnitudeSelection",
    "Selected",
    "Selection",
    "SelectiveWeightDecay",
    "budget_threshold",
    "budget_threshold_tensor",
    "build_channel_model",
    "is_stable",
    "parameter_budget",
    "population_weights",
    "prune_to_target",
    "stability_limit",
]
