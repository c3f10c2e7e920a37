"""SwitchNorm2d's whole forward and backward on CUDA as four Triton launches each, closed form.

The generic fused path (norms/fused.py) runs SN's (N, C) arithmetic (the IN/LN/BN mixing) as a few
dozen small torch ops forward and an autograd graph over them backward: at 32 samples per GPU those
launches, not the passes over the activation, set a layer's time. Here that arithmetic rides in
the kernels, with the formulas of sn_cpu.cpp (double there, ACC here: float32, float64 for float64):

    forward:  moments (triton_nc, per split) | rows: merged per-(n, c) mean and biased variance, LN
              statistics | bn: per-group BN statistics (training) | apply: mixing, y
    backward: gradient sums (triton_nc, per split) | rows: d/d(mixed mean), d/d(mixed var) per (n, c),
              row sums | cols: column sums per group, d weight, d bias, d logits | input: dx

The running buffers are moved by the caller (SwitchNorm2d._record) from the per-group BN statistics
that `forward` returns, so the EMA and recalibration code is the reference implementation's. These
are the bodies of the custom operators of norms/kernels/ops.py, which own the autograd.
"""
import torch
import triton
import triton.language as tl

from . import triton_nc as nc
from .triton_nc import _add, _channels

_ROW_BLOCK = 1024  # channels per step of the row kernels
_COL_BLOCK_C, _COL_BLOCK_N = 64, 16  # tile of the column kernels: 64 channels (contiguous) x 16 samples
_SCALARS = ["N", "C", "L", "per", "g_stride"]  # counts of 1 must stay runtime values: 1 / (L - 1) is traced


@triton.jit
def _max(a, b):
    return tl.maximum(a, b)


@triton.jit
def _pick(v, j, i):
    return tl.reduce(tl.where(j == i, v, 0.0), 0, _add)


@triton.jit
def _softmax(ptr, NB, ACC: tl.constexpr):
    """Softmax of NB (2 or 3) logits as a length-4 vector (zero beyond NB) and its first three entries."""
    j = tl.arange(0, 4)
    z = tl.load(ptr + j, mask=j < NB, other=float("-inf")).to(ACC)
    e = tl.exp(z - tl.reduce(z, 0, _max))
    p = e / tl.reduce(e, 0, _add)
    return p, _pick(p, j, 0), _pick(p, j, 1), _pick(p, j, 2)


@triton.jit
def _unbias(L, ACC: tl.constexpr):
    """H*W / (H*W - 1), or 1 for H*W == 1 (the IN variance is defined as 0 there, see SwitchNorm2d)."""
    length = L.to(ACC)
    return tl.where(L > 1, length / tl.maximum(length - 1.0, 1.0), 1.0)


@triton.jit
def _mixed(stats_ptr, rows_ptr, bm_ptr, bv_ptr, g_stride, ml_ptr, vl_ptr, NB, n, c, cmask, N, C, L, per, eps,
           HAS_BN: tl.constexpr, ACC: tl.constexpr):
    """(mean_in, biased var_in, BN mean, BN var, mixed mean, 1 / sqrt(mixed var + eps)) for sample n, channels c."""
    idx = n * C + c
    mi = tl.load(stats_ptr + idx, mask=cmask, other=0.0)
    vb = tl.load(stats_ptr + N * C + idx, mask=cmask, other=0.0)
    lm = tl.load(rows_ptr + 2 * n)
    lv = tl.load(rows_ptr + 2 * n + 1)
    _, a0, a1, a2 = _softmax(ml_ptr, NB, ACC)
    _, b0, b1, b2 = _softmax(vl_ptr, NB, ACC)
    mu = a0 * mi + a1 * lm
    var = b0 * _unbias(L, ACC) * vb + b1 * lv + eps
    bm = mi * 0.0
    bv = mi * 0.0
    if HAS_BN:
        g = n // per
        bm = tl.load(bm_ptr + g * g_stride + c, mask=cmask, other=0.0).to(ACC)
        bv = tl.load(bv_ptr + g * g_stride + c, mask=cmask, other=0.0).to(ACC)
        mu += a2 * bm
        var += b2 * bv
    return mi, vb, bm, bv, mu, 1.0 / tl.sqrt(var)


@triton.jit(do_not_specialize=_SCALARS)
def _sn_rows_kernel(mean_p, m2_p, stats_ptr, rows_ptr, N, C, L, chunk, S, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sample n: merges the split moments into mean_in / biased var_in, then the LN mean and variance."""
    n = tl.program_id(0)
    row_mean, row_m2, sum_var = nc._run_moments(mean_p, m2_p, n * C, C, S, L, chunk, stats_ptr, N * C, True, ACC,
                                                BLOCK_C)
    channels = C.to(ACC)
    tl.store(rows_ptr + 2 * n, row_mean)
    tl.store(rows_ptr + 2 * n + 1, _unbias(L, ACC) * sum_var / channels + row_m2 / channels)


@triton.jit(do_not_specialize=_SCALARS)
def _sn_bn_kernel(stats_ptr, bn_ptr, N, C, L, per, k, ACC: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    """Channel block: BN mean and variance of each statistics group (per samples), as [group, mean|var, C]."""
    c = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    count = per.to(ACC)
    for g in range(0, k):
        first = g * per
        # shifted sums about the group's first sample: no cancellation for means far from 0
        shift = tl.load(stats_ptr + first * C + c, mask=cmask, other=0.0)
        s_d = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
        s_dd = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
        s_v = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
        for n0 in range(first, first + per, BLOCK_N):
            rows = n0 + tl.arange(0, BLOCK_N)
            mask = (rows < first + per)[:, None] & cmask[None, :]
            at = rows[:, None] * C + c[None, :]
            d = tl.where(mask, tl.load(stats_ptr + at, mask=mask, other=0.0) - shift[None, :], 0.0)
            s_d += d
            s_dd += d * d
            s_v += tl.load(stats_ptr + N * C + at, mask=mask, other=0.0)
        mean_d = tl.reduce(s_d, 0, _add) / count
        var = _unbias(L, ACC) * tl.reduce(s_v, 0, _add) / count + tl.reduce(s_dd, 0, _add) / count - mean_d * mean_d
        tl.store(bn_ptr + g * 2 * C + c, shift + mean_d, mask=cmask)
        tl.store(bn_ptr + g * 2 * C + C + c, tl.maximum(var, 0.0), mask=cmask)


@triton.jit(do_not_specialize=_SCALARS)
def _sn_apply_kernel(x_ptr, y_ptr, stats_ptr, rows_ptr, bm_ptr, bv_ptr, g_stride, w_ptr, b_ptr, ml_ptr, vl_ptr, NB,
                  N, C, cblocks, L, chunk, per, eps, sxn, sxc, sxl, syn, syc, syl,
                  HAS_BN: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """y = (x - mean_in) * scale + shift, centered on mean_in as in norms/fused.py, from the mixed statistics."""
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, L)
    mi, _, _, _, mu, r = _mixed(stats_ptr, rows_ptr, bm_ptr, bv_ptr, g_stride, ml_ptr, vl_ptr, NB, n, c, cmask,
                                N, C, L, per, eps, HAS_BN, ACC)
    scale = tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC) * r
    shift = tl.load(b_ptr + c, mask=cmask, other=0.0).to(ACC) + (mi - mu) * scale
    nc._affine_tiles(x_ptr, y_ptr, n, c, cmask, lo, hi, mi[:, None], scale[:, None], shift[:, None],
                     sxn, sxc, sxl, syn, syc, syl, ACC, BLOCK_L)


@triton.jit(do_not_specialize=_SCALARS)
def _sn_grad_rows_kernel(sdy_p, sdyxc_p, stats_ptr, rows_ptr, bm_ptr, bv_ptr, g_stride, w_ptr, ml_ptr, vl_ptr, NB,
                      work_ptr, rsum_ptr, N, C, L, S, per, eps,
                      HAS_BN: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Sample n: gradients w.r.t. the mixed mean (gm) and variance (gv) per channel, and the row sums.

    work planes: gm, gv, sum dy, d scale * rstd (for d weight), scale. Row sums (8 per sample):
    sum gm, sum gv, then the sample's parts of d/d(mean weights) [IN, LN, BN] and d/d(var weights).
    """
    n = tl.program_id(0)
    s_gm = tl.full([BLOCK_C], 0.0, ACC)
    s_gv = tl.full([BLOCK_C], 0.0, ACC)
    s_da0 = tl.full([BLOCK_C], 0.0, ACC)
    s_da2 = tl.full([BLOCK_C], 0.0, ACC)
    s_dv0 = tl.full([BLOCK_C], 0.0, ACC)
    s_dv2 = tl.full([BLOCK_C], 0.0, ACC)
    plane = N * C
    for c0 in range(0, C, BLOCK_C):
        c = c0 + tl.arange(0, BLOCK_C)
        cmask = c < C
        base = (n * C + c).to(tl.int64) * S
        s1 = tl.full([BLOCK_C], 0.0, ACC)
        s2 = tl.full([BLOCK_C], 0.0, ACC)
        for s in range(0, S):
            s1 += tl.load(sdy_p + base + s, mask=cmask, other=0.0)
            s2 += tl.load(sdyxc_p + base + s, mask=cmask, other=0.0)
        mi, vb, bm, bv, mu, r = _mixed(stats_ptr, rows_ptr, bm_ptr, bv_ptr, g_stride, ml_ptr, vl_ptr, NB, n, c,
                                       cmask, N, C, L, per, eps, HAS_BN, ACC)
        w = tl.load(w_ptr + c, mask=cmask, other=0.0).to(ACC)
        scale = w * r
        d_scale = s2 + (mi - mu) * s1  # d/d scale of sum dy * ((x - mu) * scale), centered on mean_in
        gm = -scale * s1
        gv = -0.5 * d_scale * w * r * r * r
        at = n * C + c
        tl.store(work_ptr + at, gm, mask=cmask)
        tl.store(work_ptr + plane + at, gv, mask=cmask)
        tl.store(work_ptr + 2 * plane + at, s1, mask=cmask)
        tl.store(work_ptr + 3 * plane + at, d_scale * r, mask=cmask)
        tl.store(work_ptr + 4 * plane + at, scale, mask=cmask)
        s_gm += gm  # masked lanes hold s1 = 0 and w = 0, so gm = gv = 0 there
        s_gv += gv
        s_da0 += gm * mi
        s_dv0 += gv * vb
        s_da2 += gm * bm  # bm, bv are 0 without the BN branch
        s_dv2 += gv * bv
    rm = tl.reduce(s_gm, 0, _add)
    rv = tl.reduce(s_gv, 0, _add)
    out = rsum_ptr + 8 * n
    tl.store(out, rm)
    tl.store(out + 1, rv)
    tl.store(out + 2, tl.reduce(s_da0, 0, _add))
    tl.store(out + 3, tl.load(rows_ptr + 2 * n) * rm)
    tl.store(out + 4, tl.reduce(s_da2, 0, _add))
    tl.store(out + 5, _unbias(L, ACC) * tl.reduce(s_dv0, 0, _add))
    tl.store(out + 6, tl.load(rows_ptr + 2 * n + 1) * rv)
    tl.store(out + 7, tl.reduce(s_dv2, 0, _add))


@triton.jit(do_not_specialize=_SCALARS)
def _sn_grad_cols_kernel(work_ptr, rsum_ptr, csum_ptr, dw_ptr, db_ptr, ml_ptr, vl_ptr, dml_ptr, dvl_ptr, NB, N, C,
                      per, k, BATCH_BN: tl.constexpr, ACC: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_C: tl.constexpr):
    """Channel block: per-group column sums of gm, gv (training BN branch), d weight, d bias; d logits (block 0)."""
    pid = tl.program_id(0)
    c = pid * BLOCK_C + tl.arange(0, BLOCK_C)
    cmask = c < C
    plane = N * C
    s_dw = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
    s_db = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
    for g in range(0, k):
        s_gm = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
        s_gv = tl.full([BLOCK_N, BLOCK_C], 0.0, ACC)
        for n0 in range(g * per, (g + 1) * per, BLOCK_N):
            rows = n0 + tl.arange(0, BLOCK_N)
            mask = (rows < (g + 1) * per)[:, None] & cmask[None, :]
            at = rows[:, None] * C + c[None, :]
            s_gm += tl.load(work_ptr + at, mask=mask, other=0.0)
            s_gv += tl.load(work_ptr + plane + at, mask=mask, other=0.0)
            s_db += tl.load(work_ptr + 2 * plane + at, mask=mask, other=0.0)
            s_dw += tl.load(work_ptr + 3 * plane + at, mask=mask, other=0.0)
        if BATCH_BN:
            tl.store(csum_ptr + g * 2 * C + c, tl.reduce(s_gm, 0, _add), mask=cmask)
            tl.store(csum_ptr + g * 2 * C + C + c, tl.reduce(s_gv, 0, _add), mask=cmask)
    tl.store(dw_ptr + c, tl.reduce(s_dw, 0, _add), mask=cmask)
    tl.store(db_ptr + c, tl.reduce(s_db, 0, _add), mask=cmask)
    # d logits from the row sums: a few N x 3 values, summed by every block and stored by block 0
    j = tl.arange(0, 4)
    s_da = tl.full([BLOCK_N, 4], 0.0, ACC)
    s_dv = tl.full([BLOCK_N, 4], 0.0, ACC)
    for n0 in range(0, N, BLOCK_N):
        rows = n0 + tl.arange(0, BLOCK_N)
        mask = (rows < N)[:, None] & (j < 3)[None, :]
        s_da += tl.load(rsum_ptr + rows[:, None] * 8 + 2 + j[None, :], mask=mask, other=0.0)
        s_dv += tl.load(rsum_ptr + rows[:, None] * 8 + 5 + j[None, :], mask=mask, other=0.0)
    da = tl.reduce(s_da, 0, _add)
    dv = tl.reduce(s_dv, 0, _add)
    pa, _, _, _ = _softmax(ml_ptr, NB, ACC)
    pb, _, _, _ = _softmax(vl_ptr, NB, ACC)
    first = (j < NB) & (pid == 0)
    tl.store(dml_ptr + j, pa * (da - tl.reduce(pa * da, 0, _add)), mask=first)  # softmax Jacobian
    tl.store(dvl_ptr + j, pb * (dv - tl.reduce(pb * dv, 0, _add)), mask=first)


@triton.jit(do_not_specialize=_SCALARS)
def _sn_grad_input_kernel(x_ptr, dy_ptr, dx_ptr, stats_ptr, rows_ptr, bm_ptr, g_stride, work_ptr, rsum_ptr, csum_ptr,
                       ml_ptr, vl_ptr, NB, N, C, cblocks, L, chunk, per, sxn, sxc, sxl, sgn, sgc, sgl, sdn, sdc, sdl,
                       BATCH_BN: tl.constexpr, ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    """dx = scale * dy + k1 * (x - mean_in) + k0, with k1 = 2 f g_var / HW, k0 = g_mean / HW (sn_cpu.cpp)."""
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, L)
    plane = N * C
    at = n * C + c
    mi = tl.load(stats_ptr + at, mask=cmask, other=0.0)
    gm = tl.load(work_ptr + at, mask=cmask, other=0.0)
    gv = tl.load(work_ptr + plane + at, mask=cmask, other=0.0)
    scale = tl.load(work_ptr + 4 * plane + at, mask=cmask, other=0.0)
    lm = tl.load(rows_ptr + 2 * n)
    rm = tl.load(rsum_ptr + 8 * n)
    rv = tl.load(rsum_ptr + 8 * n + 1)
    _, a0, a1, a2 = _softmax(ml_ptr, NB, ACC)
    _, b0, b1, b2 = _softmax(vl_ptr, NB, ACC)
    channels = C.to(ACC)
    g_mean = a0 * gm + a1 * rm / channels + 2.0 * b1 * rv / channels * (mi - lm)
    g_var = b0 * gv + b1 * rv / channels
    if BATCH_BN:  # only a batch BN branch depends on this sample's mean_in and var_in
        g = n // per
        count = per.to(ACC)
        bm = tl.load(bm_ptr + g * g_stride + c, mask=cmask, other=0.0)
        cm = tl.load(csum_ptr + g * 2 * C + c, mask=cmask, other=0.0)
        cv = tl.load(csum_ptr + g * 2 * C + C + c, mask=cmask, other=0.0)
        g_mean += a2 * cm / count + 2.0 * b2 * cv / count * (mi - bm)
        g_var += b2 * cv / count
    length = L.to(ACC)
    k1 = 2.0 * _unbias(L, ACC) * g_var / length
    k0 = g_mean / length
    nc._grad_input_tiles(x_ptr, dy_ptr, dx_ptr, n, c, cmask, lo, hi, mi[:, None], scale[:, None], k1[:, None],
                         k0[:, None], sxn, sxc, sxl, sgn, sgc, sgl, sdn, sdc, sdl, ACC, BLOCK_L)


def _bn_source(stats, bn, running, n, groups):
    """(BN mean, BN var, group stride, samples per group) as the kernels read them."""
    if bn is not None:
        return bn[:, 0], bn[:, 1], 2 * stats.shape[2], n // groups
    if running:
        return running[0], running[1], 0, n
    return stats, stats, 0, n  # no BN branch: never read


def _row_block(c):
    return min(triton.next_power_of_2(c), _ROW_BLOCK)


def forward(x, weight, bias, mean_logits, var_logits, running_mean, running_var, groups, eps):
    """(y, stats, rows, bn): SN of a CUDA (or interpreted) x, see norms.SwitchNorm2d, and what `backward` reads.

    stats: per-(n, c) mean and biased variance (2, N, C); rows: LN mean and variance (N, 2); bn: the
    BN branch's batch statistics [group, mean|var, C] in training, empty in eval (the running buffers
    are given) or without a BN branch.
    """
    running = () if running_mean is None else (running_mean, running_var)
    x, sx, mean_p, m2_p, chunk = nc.moment_partials(x)
    n, c, h, w = x.shape
    acc = nc._acc_torch(x)
    meta_acc = nc._acc(x)
    stats = torch.empty(2, n, c, dtype=acc, device=x.device)
    rows = torch.empty(n, 2, dtype=acc, device=x.device)
    _sn_rows_kernel[(n,)](mean_p, m2_p, stats, rows, n, c, h * w, chunk, mean_p.shape[2], ACC=meta_acc,
                          BLOCK_C=_row_block(c))
    nb = mean_logits.numel()
    bn = None
    if nb == 3 and not running:
        bn = torch.empty(groups, 2, c, dtype=acc, device=x.device)
        _sn_bn_kernel[(triton.cdiv(c, _COL_BLOCK_C),)](stats, bn, n, c, h * w, n // groups, groups, ACC=meta_acc,
                                                       BLOCK_N=_COL_BLOCK_N, BLOCK_C=_COL_BLOCK_C)
    bm, bv, g_stride, per = _bn_source(stats, bn, running, n, groups)
    y = torch.empty_like(x)
    grid, chunk, meta = nc._plan(x, sx, reduction=False)
    _sn_apply_kernel[grid](x, y, stats, rows, bm, bv, g_stride, weight, bias, mean_logits, var_logits, nb, n, c,
                           L=h * w, chunk=chunk, per=per, eps=eps, **nc._named(sx, "x"),
                           **nc._named(nc._strides(y), "y"), HAS_BN=nb == 3, ACC=meta_acc, **meta)
    return y, stats, rows, stats.new_empty(0) if bn is None else bn


def backward(dy, x, stats, rows, weight, mean_logits, var_logits, running_mean, running_var, bn, groups, eps):
    """(dx, d weight, d bias, d mean logits, d var logits) of a `forward` that returned (stats, rows, bn)."""
    batch_bn = bn.numel() > 0
    running = () if batch_bn or running_mean is None else (running_mean, running_var)
    n, c, h, w = x.shape
    nb = mean_logits.numel()
    x, sx, dy, sg, sdy_p, sdyxc_p = nc.grad_sum_partials(x, dy, stats[0])
    acc, meta_acc = nc._acc_torch(x), nc._acc(x)
    work = torch.empty(5, n, c, dtype=acc, device=x.device)
    rsum = torch.empty(n, 8, dtype=acc, device=x.device)
    bm, bv, g_stride, per = _bn_source(stats, bn if batch_bn else None, running, n, groups)
    _sn_grad_rows_kernel[(n,)](sdy_p, sdyxc_p, stats, rows, bm, bv, g_stride, weight, mean_logits, var_logits, nb,
                               work, rsum, n, c, h * w, sdy_p.shape[2], per, eps, HAS_BN=nb == 3,
                               ACC=meta_acc, BLOCK_C=_row_block(c))
    csum = torch.empty(groups, 2, c, dtype=acc, device=x.device) if batch_bn else work
    d_weight, d_bias = (torch.empty(c, dtype=acc, device=x.device) for _ in range(2))
    d_mean, d_var = (torch.empty(nb, dtype=acc, device=x.device) for _ in range(2))
    k, per_col = (groups, per) if batch_bn else (1, n)
    _sn_grad_cols_kernel[(triton.cdiv(c, _COL_BLOCK_C),)](work, rsum, csum, d_weight, d_bias, mean_logits,
                                                          var_logits, d_mean, d_var, nb, n, c, per_col, k,
                                                          BATCH_BN=batch_bn, ACC=meta_acc,
                                                          BLOCK_N=_COL_BLOCK_N, BLOCK_C=_COL_BLOCK_C)
    dx = torch.empty_like(x)
    grid, chunk, meta = nc._plan(x, sx, reduction=False)
    _sn_grad_input_kernel[grid](x, dy, dx, stats, rows, bm, g_stride, work, rsum, csum, mean_logits, var_logits,
                                nb, n, c, L=h * w, chunk=chunk, per=per, **nc._named(sx, "x"),
                                **nc._named(sg, "g"), **nc._named(nc._strides(dx), "d"), BATCH_BN=batch_bn,
                                ACC=meta_acc, **meta)
    return (dx, d_weight.to(weight.dtype), d_bias.to(weight.dtype), d_mean.to(mean_logits.dtype),
            d_var.to(var_logits.dtype))
