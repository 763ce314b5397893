"""One alternating-least-squares sweep that refits tensor-train cores to a tensor, never worse than before.

Holtz, Rohwedder, Schneider, "The alternating linear scheme for tensor optimization in the tensor train
format", SIAM J. Sci. Comput. 2012; Oseledets 2011 for the TT format. NN-BCD
(docs/nnbcd.md#tensor-train-projection and #defaults-and-faithful-flags) projects each compressed weight to TT
form every sweep; TT-SVD is only quasi-optimal, so its cores can be farther from the weight than the previous
ones. Refitting the previous cores by ALS instead is monotone: with orthonormal interfaces on both sides, each
core's update is the exact least-squares minimiser given the others, so ‖T − 𝒯(G)‖_F never increases and the
ranks stay those of the previous cores.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["tt_als_sweep"]


def tt_als_sweep(tensor: torch.Tensor, cores: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """One left-to-right ALS sweep of ``cores`` towards ``tensor``.

    The cores are first right-orthogonalised (QR, 𝒯(G) unchanged). Then, for k = 1..d, core k becomes the
    projection of the tensor on the orthonormal left interface (the new cores 1..k−1) and right interface
    (the previous cores k+1..d); every core but the last is stored as the Q factor of that projection, so
    the next left interface stays orthonormal.

    Args:
        tensor: Target tensor of shape (n_1, …, n_d).
        cores: Starting cores of shape (r_{k−1}, n_k, r_k), r_0 = r_d = 1, with ``r_{k−1} ≤ n_k·r_k`` and
            ``r_k ≤ r_{k−1}·n_k`` (true for the capped ranks of :func:`~slimtrain.bcd.tt.tt_ranks`).

    Returns:
        New cores with the same shapes; ‖tensor − 𝒯(new)‖_F ≤ ‖tensor − 𝒯(cores)‖_F up to rounding.

    Raises:
        ValueError: If the cores' modes differ from the tensor's shape, or a rank exceeds its bound.
    """
    modes = tuple(int(c.shape[1]) for c in cores)
    if modes != tuple(tensor.shape):
        raise ValueError(f"TT cores of modes {modes} for a tensor of shape {tuple(tensor.shape)}")
    for k, (left, n, right) in enumerate(c.shape for c in cores):
        if left > n * right or right > left * n:
            raise ValueError(f"TT core {k} of shape {(left, n, right)}: a rank exceeds n_k times the other")
    d = len(cores)
    cores = [c.to(tensor.dtype) for c in cores]
    # Right-orthogonalise cores d..2: rows of each (r_{k−1}, n_k·r_k) unfolding become orthonormal.
    for k in range(d - 1, 0, -1):
        left, n, right = cores[k].shape
        q, r = torch.linalg.qr(cores[k].reshape(left, n * right).T)
        cores[k] = q.T.reshape(left, n, right)
        prev = cores[k - 1]
        cores[k - 1] = (prev.reshape(-1, left) @ r.T).reshape(prev.shape)
    # Right interfaces: interface[k] (r_k × ∏_{j>k} n_j) contracts the previous cores k+1..d.
    interface = [torch.ones(1, 1, dtype=tensor.dtype, device=tensor.device)]
    for k in range(d - 1, 0, -1):
        core = cores[k]
        interface.insert(0, (core.reshape(-1, core.shape[2]) @ interface[0]).reshape(core.shape[0], -1))
    # Left-to-right: `projected` is the tensor contracted with the new left interface, (r_{k−1}, rest).
    projected = tensor.reshape(1, -1)
    for k in range(d):
        left, n, right = cores[k].shape
        fitted = (projected.reshape(left * n, -1) @ interface[k].T).reshape(left, n, right)
        if k == d - 1:
            cores[k] = fitted
            break
        q, _ = torch.linalg.qr(fitted.reshape(left * n, right))
        cores[k] = q.reshape(left, n, right)
        projected = q.T @ projected.reshape(left * n, -1)
    return cores
