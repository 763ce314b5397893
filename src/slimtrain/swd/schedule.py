"""The per-step exponential growth of the SWD coefficient a (docs/swd.md#schedule-and-final-pruning).

The schedule is the sparsity core's :class:`slimtrain.pruning.ExponentialSchedule`, re-exported here.
"""

from slimtrain.pruning.schedules import ExponentialSchedule

__all__ = ["ExponentialSchedule"]
