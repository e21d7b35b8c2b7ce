"""Selective state-space scans (Mamba's S6 recurrence) and their 2-D, four-direction use on feature maps.

The recurrence, per channel ``d`` and state ``n``, over a sequence ``t = 0 .. L-1``::

    h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t
    y_t = <C_t, h_t> + D * u_t

Three interchangeable forms compute it:

* :func:`selective_scan_sequential`: the loop above, the reference (slow; for tests).
* :func:`selective_scan_parallel`: a log-depth (Hillis-Steele) scan over the affine maps ``h -> a h + b``, pure
  PyTorch, any device. Written by hand because ``mamba-ssm`` needs CUDA and the small pure-PyTorch packages
  scan with a cumulative-sum trick that overflows on long sequences; composing ``(a, b)`` pairs only ever
  multiplies decays in ``(0, 1]``, so it is stable at any length.
* the fused CUDA kernel of ``mamba-ssm`` (``selective_scan_fn``), used by :func:`selective_scan` when that
  package imports and the tensors are on a GPU.
"""

from __future__ import annotations

import functools

import torch


def _check(u, delta, A, B, C):
    if u.shape != delta.shape or u.ndim != 3:
        raise ValueError(f"u and delta must both be (batch, L, d), got {tuple(u.shape)} and {tuple(delta.shape)}")
    if A.shape != (u.shape[-1], A.shape[-1]):
        raise ValueError(f"A must be (d, n) with d={u.shape[-1]}, got {tuple(A.shape)}")
    if B.shape != C.shape or B.shape[:2] != u.shape[:2]:
        raise ValueError(f"B and C must be (batch, L, n), got {tuple(B.shape)} and {tuple(C.shape)}")


def selective_scan_sequential(u, delta, A, B, C, D=None):
    """Reference scan, one time step at a time.

    Args:
        u: ``(batch, L, d)`` inputs.
        delta: ``(batch, L, d)`` positive step sizes.
        A: ``(d, n)`` negative state decay rates.
        B, C: ``(batch, L, n)`` input-dependent input and output projections.
        D: optional ``(d,)`` skip weights.
    Returns:
        ``(batch, L, d)`` outputs ``y``.
    """
    _check(u, delta, A, B, C)
    h = u.new_zeros(u.shape[0], u.shape[2], A.shape[1])
    ys = []
    for t in range(u.shape[1]):
        a = torch.exp(delta[:, t, :, None] * A)
        h = a * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))
    y = torch.stack(ys, dim=1)
    return y + u * D if D is not None else y


def selective_scan_parallel(u, delta, A, B, C, D=None):
    """The same recurrence as :func:`selective_scan_sequential` in ``ceil(log2 L)`` vectorised steps.

    Same arguments and result. Memory is ``O(batch * L * d * n)`` per step (kept for autograd).

    >>> u, dt = torch.rand(2, 9, 3), torch.rand(2, 9, 3)
    >>> A, B, C = -torch.rand(3, 4), torch.randn(2, 9, 4), torch.randn(2, 9, 4)
    >>> torch.allclose(selective_scan_parallel(u, dt, A, B, C), selective_scan_sequential(u, dt, A, B, C), atol=1e-5)
    True
    """
    _check(u, delta, A, B, C)
    a = torch.exp(delta[..., None] * A)  # (batch, L, d, n) decays in (0, 1]
    b = (delta * u)[..., None] * B[:, :, None, :]
    length, step = u.shape[1], 1
    while step < length:
        # h_t = a_t h_{t-1} + b_t composed with the map ending `step` earlier: (a, b)_t <- (a_t a_s, a_t b_s + b_t)
        # positions before `step` have nothing to compose with: only the tail changes (no padded copies)
        head_b, head_a = b[:, :step], a[:, :step]
        tail_b = torch.addcmul(b[:, step:], a[:, step:], b[:, :-step])
        tail_a = a[:, step:] * a[:, :-step]
        b, a = torch.cat([head_b, tail_b], 1), torch.cat([head_a, tail_a], 1)
        step *= 2
    y = (b * C[:, :, None, :]).sum(-1)
    return y + u * D if D is not None else y


@functools.cache
def _cuda_kernel():
    try:  # optional: `pip install mamba-ssm` on a CUDA machine
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except Exception:  # noqa: BLE001 - missing package, or one built for another CUDA/torch
        return None
    return selective_scan_fn


def cuda_kernel_available() -> bool:
    """Whether ``mamba-ssm``'s fused CUDA scan imports (it is only used on CUDA tensors)."""
    return _cuda_kernel() is not None and torch.cuda.is_available()


def selective_scan(u, delta, A, B, C, D=None):
    """Dispatch: the ``mamba-ssm`` CUDA kernel for CUDA tensors when installed, else :func:`selective_scan_parallel`."""
    kernel = _cuda_kernel() if u.is_cuda else None
    if kernel is None:
        return selective_scan_parallel(u, delta, A, B, C, D)
    y = kernel(
        u.transpose(1, 2).contiguous(), delta.transpose(1, 2).contiguous(), A.contiguous(),
        B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(), D, delta_softplus=False,
    )  # fmt: skip
    return y.transpose(1, 2)


def scan_orders(height: int, width: int, device=None) -> torch.Tensor:
    """Four scan orders of an ``H x W`` map: rows, rows reversed, columns, columns reversed.

    Returns:
        ``(4, H*W)`` long indices into the row-major flattened map.
    """
    grid = torch.arange(height * width, device=device).view(height, width)
    rows, cols = grid.flatten(), grid.t().flatten()
    return torch.stack([rows, rows.flip(0), cols, cols.flip(0)])
