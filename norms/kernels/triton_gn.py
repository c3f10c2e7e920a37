"""GroupNorm2d's (GN, IN, LN) whole forward and backward on CUDA: three Triton launches forward, four backward.

    forward:  moments (per split) | groups: merged group mean and rstd per (n, g), written out as
              per-(n, c) mean, scale, shift | apply (triton_nc)
    backward: gradient sums (per split) | groups: the closed-form coefficients per (n, c) |
              column sums: d weight, d bias | grad input (triton_nc)

Group statistics are merged exactly from the per-channel moments (equal counts): mean of the means,
mean of the biased variances plus the spread of the means. Backward, with x_hat = (x - mean) * rstd
over the M = (C / G) * H * W values of a group,

    dx = rstd * (w * dy - A / M - x_hat * B / M),  A = sum w * dy,  B = sum w * dy * x_hat,

with A and B from the per-channel sums. Accumulation in float32 (float64 for float64 input). These
are the bodies of the custom operators of norms/kernels/ops.py, which own the autograd.
"""
import torch
import triton
import triton.language as tl

from . import triton_nc as nc
from .triton_nc import _add

_BLOCK = 1024  # channels of a group per step
_COL_BLOCK_C, _COL_BLOCK_N = 64, 16
_SCALARS = ["N", "C", "L", "cpg"]  # counts of 1 stay runtime values


@triton.jit
def _weight(w_ptr, c, cmask, HAS_W: tl.constexpr, ACC: tl.constexpr):
    if HAS_W:
        return tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)
    return tl.where(cmask, 1.0, 0.0).to(ACC)


@triton.jit(do_not_specialize=_SCALARS)
def _gn_groups_kernel(mean_p, m2_p, w_ptr, b_ptr, m_ptr, scale_ptr, shift_ptr, rstd_ptr, C, G, cpg, L, chunk, S, eps,
                      HAS_W: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Group g of sample n: rstd, and the per-channel mean, scale and shift of y = (x - mean) * scale + shift."""
    pid = tl.program_id(0)
    n = pid // G
    first = n * C + (pid % G) * cpg  # flat (n, c) index of the group's first channel
    mean, m2, sum_var = nc._run_moments(mean_p, m2_p, first, cpg, S, L, chunk, m_ptr, 0, False, ACC, BLOCK_C)
    channels = cpg.to(ACC)
    r = 1.0 / tl.sqrt(sum_var / channels + m2 / channels + eps)
    tl.store(rstd_ptr + pid, r)
    for j0 in range(0, cpg, BLOCK_C):
        j = j0 + tl.arange(0, BLOCK_C)
        jmask = j < cpg
        c = first - n * C + j
        shift = tl.where(jmask, 0.0, 0.0).to(ACC)
        if HAS_W:
            shift = tl.load(b_ptr + c, mask=jmask, other=0.0).to(ACC)
        tl.store(m_ptr + first + j, tl.where(jmask, mean, 0.0), mask=jmask)
        tl.store(scale_ptr + first + j, _weight(w_ptr, c, jmask, HAS_W, ACC) * r, mask=jmask)
        tl.store(shift_ptr + first + j, shift, mask=jmask)


@triton.jit(do_not_specialize=_SCALARS)
def _gn_grad_groups_kernel(sdy_p, sdyxc_p, w_ptr, rstd_ptr, scale_ptr, k1_ptr, k0_ptr, cols_ptr, N, C, G, cpg, L, S,
                           HAS_W: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Group g of sample n: dx's per-channel coefficients; sum dy and rstd * sum dy (x - mean) for the columns."""
    pid = tl.program_id(0)
    n = pid // G
    first = n * C + (pid % G) * cpg
    r = tl.load(rstd_ptr + pid)
    s_a = tl.full([BLOCK_C], 0.0, ACC)
    s_b = tl.full([BLOCK_C], 0.0, ACC)
    for j0 in range(0, cpg, BLOCK_C):
        j = j0 + tl.arange(0, BLOCK_C)
        jmask = j < cpg
        base = (first + j).to(tl.int64) * S
        s1 = tl.full([BLOCK_C], 0.0, ACC)
        s2 = tl.full([BLOCK_C], 0.0, ACC)
        for s in range(0, S):
            s1 += tl.load(sdy_p + base + s, mask=jmask, other=0.0)
            s2 += tl.load(sdyxc_p + base + s, mask=jmask, other=0.0)
        w = _weight(w_ptr, first - n * C + j, jmask, HAS_W, ACC)
        s_a += w * s1
        s_b += w * s2
        tl.store(cols_ptr + first + j, s1, mask=jmask)
        tl.store(cols_ptr + N * C + first + j, s2 * r, mask=jmask)
    count = cpg.to(ACC) * L.to(ACC)
    k0 = -r * tl.reduce(s_a, 0, _add) / count
    k1 = -r * r * r * tl.reduce(s_b, 0, _add) / count  # x_hat * B / M with B = rstd * sum w dy (x - mean)
    for j0 in range(0, cpg, BLOCK_C):
        j = j0 + tl.arange(0, BLOCK_C)
        jmask = j < cpg
        tl.store(scale_ptr + first + j, _weight(w_ptr, first - n * C + j, jmask, HAS_W, ACC) * r, mask=jmask)
        tl.store(k1_ptr + first + j, tl.where(jmask, k1, 0.0), mask=jmask)
        tl.store(k0_ptr + first + j, tl.where(jmask, k0, 0.0), mask=jmask)


@triton.jit(do_not_specialize=_SCALARS)
def _gn_columns_kernel(cols_ptr, db_ptr, dw_ptr, N, C, ACC: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_C: tl.constexpr):
    """d bias and d weight: the two (N, C) planes of _gn_grad_groups_kernel summed over samples."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    s_db = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
    s_dw = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        mask = (rows < N)[:, None] & cmask[None, :]
        at = rows[:, None] * C + c[None, :]
        s_db += tl.load(cols_ptr + at, mask=mask, other=0.0)
        s_dw += tl.load(cols_ptr + N * C + at, mask=mask, other=0.0)
    tl.store(db_ptr + c, tl.reduce(s_db, 0, _add), mask=cmask)
    tl.store(dw_ptr + c, tl.reduce(s_dw, 0, _add), mask=cmask)


def _block(cpg):
    return min(triton.next_power_of_2(cpg), _BLOCK)


def forward(x, weight, bias, groups, eps):
    """(y, mean, rstd): F.group_norm(x, groups, weight, bias, eps) of a 4-D CUDA (or interpreted) x, the per-(n, c)
    mean and per-(n, group) 1 / sqrt(var + eps) that `backward` reads; weight and bias may be None."""
    x, sx, mean_p, m2_p, chunk = nc.moment_partials(x)
    n, c, h, w = x.shape
    acc, meta_acc = nc._acc_torch(x), nc._acc(x)
    m, scale, shift = (torch.empty(n, c, dtype=acc, device=x.device) for _ in range(3))
    rstd = torch.empty(n, groups, dtype=acc, device=x.device)
    has_w = weight is not None
    _gn_groups_kernel[(n * groups,)](mean_p, m2_p, weight if has_w else m, bias if has_w else m, m, scale, shift,
                                     rstd, c, groups, c // groups, h * w, chunk, mean_p.shape[2], eps,
                                     HAS_W=has_w, ACC=meta_acc, BLOCK_C=_block(c // groups))
    y = torch.empty_like(x)
    grid, chunk, meta = nc._plan(x, sx, reduction=False)
    nc._apply_kernel[grid](x, y, m, scale, shift, c, L=h * w, chunk=chunk, **nc._named(sx, "x"),
                           **nc._named(nc._strides(y), "y"), ACC=meta_acc, **meta)
    return y, m, rstd


def backward(dy, x, m, rstd, weight, groups):
    """(dx, d weight, d bias) of a `forward` that returned (m, rstd); empty parameter gradients without weight."""
    n, c, h, w = x.shape
    x, sx, dy, sg, sdy_p, sdyxc_p = nc.grad_sum_partials(x, dy, m)
    acc, meta_acc = nc._acc_torch(x), nc._acc(x)
    scale, k1, k0 = (torch.empty(n, c, dtype=acc, device=x.device) for _ in range(3))
    cols = torch.empty(2, n, c, dtype=acc, device=x.device)  # sum dy, rstd * sum dy (x - mean)
    has_w = weight is not None
    _gn_grad_groups_kernel[(n * groups,)](sdy_p, sdyxc_p, weight if has_w else m, rstd, scale, k1, k0, cols,
                                          n, c, groups, c // groups, h * w, sdy_p.shape[2], HAS_W=has_w,
                                          ACC=meta_acc, BLOCK_C=_block(c // groups))
    if has_w:
        d_bias, d_weight = (torch.empty(c, dtype=acc, device=x.device) for _ in range(2))
        _gn_columns_kernel[(triton.cdiv(c, _COL_BLOCK_C),)](cols, d_bias, d_weight, n, c, ACC=meta_acc,
                                                            BLOCK_N=_COL_BLOCK_N, BLOCK_C=_COL_BLOCK_C)
        d_weight, d_bias = d_weight.to(weight.dtype), d_bias.to(weight.dtype)
    else:
        d_weight, d_bias = (torch.empty(0, dtype=acc, device=x.device) for _ in range(2))
    dx = torch.empty_like(x)
    grid, chunk, meta = nc._plan(x, sx, reduction=False)
    nc._grad_input_kernel[grid](x, dy, dx, m, scale, k1, k0, c, L=h * w, chunk=chunk, **nc._named(sx, "x"),
                                **nc._named(sg, "g"), **nc._named(nc._strides(dx), "d"), ACC=meta_acc, **meta)
    return dx, d_weight, d_bias
