"""Expected initial norms of a model's parameters, the base of the radius selection (spec ``sfw.md`` §2.4).

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) set every radius from ``E‖θ_init‖``, estimated by re-drawing
each module's default initialization. Unlike the reference code this never touches the user's model nor
the global random state: the draws run on a deep copy inside a forked RNG with a dedicated seed.
"""

from __future__ import annotations

import copy
from typing import Literal

import torch
from torch import nn

__all__ = ["estimate_init_norms", "local_init_norms"]

RadiusLookup = Literal["per_tensor", "by_shape"]


def estimate_init_norms(model: nn.Module, n_draws: int = 100, seed: int = 0) -> dict[str, float]:
    """Monte-Carlo mean of the L2 norm of every trainable parameter under its module's default init.

    For every module that owns parameters and has ``reset_parameters()`` (PyTorch's default init, e.g.
    kaiming-uniform with ``a = √5`` for conv/linear; not any custom init of the model), the method is
    called ``n_draws`` times on a deep copy and the norms of the module's own parameters are averaged.
    Parameters of modules without ``reset_parameters`` keep their current norm (one draw is all there is).

    Args:
        model: the model; it is neither modified nor re-randomized, and the global RNG state is unchanged.
        n_draws: number of re-initializations (reference: 100).
        seed: seed of the draws, so the estimate is identical on every run and every DDP rank.

    Returns:
        ``{parameter name (as in named_parameters): mean L2 norm}`` for every trainable parameter.

    Raises:
        ValueError: if ``n_draws < 1``.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be ≥ 1, got {n_draws}")
    names = {id(p): name for name, p in model.named_parameters() if p.requires_grad}
    devices = [p.device for p in model.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices}) if devices else []):
        torch.manual_seed(seed)
        twin = copy.deepcopy(model)
        twin_names = {id(p): name for name, p in twin.named_parameters()}
        wanted = {name for name in names.values()}
        norms: dict[str, float] = {}
        with torch.no_grad():
            for module in twin.modules():
                own = [(twin_names.get(id(p)), p) for p in module.parameters(recurse=False)]
                own = [(n, p) for n, p in own if n in wanted and n not in norms]
                if not own:
                    continue
                reset = getattr(module, "reset_parameters", None)
                if not callable(reset):
                    norms.update({n: float(p.norm()) for n, p in own})
                    continue
                total = dict.fromkeys((n for n, _ in own), 0.0)
                for _ in range(n_draws):
                    reset()
                    for n, p in own:
                        total[n] += float(p.norm())
                norms.update({n: t / n_draws for n, t in total.items()})
    return {name: norms[name] for name in names.values()}


def local_init_norms(
    model: nn.Module, norms: dict[str, float], lookup: RadiusLookup = "per_tensor"
) -> dict[str, float]:
    """Per-tensor norms as local mode uses them: a mean of 0 (zero biases, BN β) is replaced by 1.0.

    Args:
        model: the model the norms belong to.
        norms: the output of :func:`estimate_init_norms`.
        lookup: ``"per_tensor"`` (default, corrected) or ``"by_shape"`` (faithful to the reference code,
            which stores the means in a dict keyed by tensor shape: filled in module order, weight before
            bias, the last write wins, so e.g. BN γ and β both get 1.0; spec §5).

    Returns:
        ``{parameter name: norm}`` for the parameters in ``norms``.
    """
    local = {name: (value if value > 0 else 1.0) for name, value in norms.items()}
    if lookup == "per_tensor":
        return local
    if lookup != "by_shape":
        raise ValueError(f"radius lookup must be 'per_tensor' or 'by_shape', got {lookup!r}")
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters() if name in local}
    by_shape: dict[tuple[int, ...], float] = {}
    for module_name, module in model.named_modules():
        for pname, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{pname}" if module_name else pname
            if full in local:
                by_shape[shapes[full]] = local[full]
    return {name: by_shape[shapes[name]] for name in local}
