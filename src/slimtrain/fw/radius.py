"""Expected initial norms of a model's parameters, the base of the radius selection (docs/sfw.md).

Zimmer, Spiegel, Pokutta (arXiv:2205.11921) set every radius from ``E‖θ_init‖``, estimated by re-drawing
each module's default initialization. Unlike the reference code this never touches the user's model nor
the global random state: the draws run on a deep copy inside a forked RNG with a dedicated seed.
"""

from __future__ import annotations

import copy
from collections.abc import Collection
from typing import Literal

import torch
from torch import nn

__all__ = ["estimate_init_norms", "local_init_norms", "reference_init_norms"]

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


def reference_init_norms(
    model: nn.Module, n_draws: int = 100, first: Collection[str] = ()
) -> dict[str, float]:
    """The reference code's Monte-Carlo estimate of ``E‖θ_init‖``: on the live model, from the global RNG.

    Reproduces compression-aware-SFW (Zimmer et al.) draw for draw given the same global RNG state: for
    every module's ``weight`` then ``bias`` (modules in ``model.modules()`` order; the tensors named in
    ``first`` before all others, as the reference builds the conv-filter sets of its structured modes
    first), ``module.reset_parameters()`` is called ``n_draws`` times and the L2 norms of that one tensor
    are averaged, so a module with a weight and a bias is re-drawn ``2·n_draws`` times. **The model is
    re-randomized** (it ends at its last draw, from which the reference then trains) and the global RNG is
    consumed; :func:`estimate_init_norms` is the side-effect-free default.

    Args:
        model: the model, modified in place.
        n_draws: re-initializations per tensor (reference: 100).
        first: parameter names drawn before the others.

    Returns:
        ``{parameter name: mean L2 norm}`` for every trainable parameter; tensors the reference does not
        draw (no ``reset_parameters``, or not called weight or bias) get their current norm.

    Raises:
        ValueError: if ``n_draws < 1``.
    """
    if n_draws < 1:
        raise ValueError(f"n_draws must be ≥ 1, got {n_draws}")
    entries = [
        (module, kind, f"{module_name}.{kind}" if module_name else kind)
        for module_name, module in model.named_modules()
        for kind in ("weight", "bias")
        if getattr(module, kind, None) is not None
    ]
    entries = [e for e in entries if e[2] in first] + [e for e in entries if e[2] not in first]
    norms: dict[str, float] = {}
    with torch.no_grad():
        for module, kind, name in entries:
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                continue
            total = 0.0
            for _ in range(n_draws):
                reset()
                total += torch.norm(getattr(module, kind), p=2).item()
            norms[name] = float(total) / n_draws
        return {
            name: norms[name] if name in norms else float(p.norm())
            for name, p in model.named_parameters()
            if p.requires_grad
        }


def local_init_norms(
    model: nn.Module, norms: dict[str, float], lookup: RadiusLookup = "per_tensor"
) -> dict[str, float]:
    """Per-tensor norms as local mode uses them: a mean of 0 (zero biases, BN β) is replaced by 1.0.

    Args:
        model: the model the norms belong to.
        norms: the output of :func:`estimate_init_norms`.
        lookup: ``"per_tensor"`` (default, corrected) or ``"by_shape"`` (faithful to the reference code,
            which stores the means in a dict keyed by tensor shape: filled in module order, weight before
            bias, the last write wins, so e.g. BN γ and β both get 1.0;
            docs/sfw.md#faithful-and-corrected-behaviour).

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
