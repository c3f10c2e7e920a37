"""Triton kernels for the four per-(n, c) primitives, for NCHW and channels_last without layout copies.

Every kernel walks a [BLOCK_C, BLOCK_L] tile of one sample n, channels c and flattened positions
l = h * W + w, addressed through the tensor's own strides: NCHW is contiguous along l and
channels_last along c, and Triton specializes a stride of 1, so loads are coalesced along
whichever axis is contiguous. The tile shape follows that axis. Program (n, channel block, split)
owns a contiguous range of l, so reductions need no atomics: each split writes its partial
(count, mean, M2) or partial sums, merged exactly on the host over a small (N, C, splits) tensor.
Accumulation is float32 (float64 for float64 input); outputs take the input's dtype.
"""
import functools

import torch
import triton
import triton.language as tl
from triton import knobs

INTERPRETED = knobs.runtime.interpret  # the kernels below were decorated for the CPU interpreter

# Tile shape limits: a tile is at most _TILE elements (16 per thread at 4 warps), at most _MAX_BLOCK_L
# positions along a contiguous l axis or _MAX_BLOCK_C channels along a contiguous c axis.
# Tests shrink them so that the interpreter walks several tiles and splits at small shapes.
_TILE = 2048
_MAX_BLOCK_L = 1024
_MAX_BLOCK_C = 128


@triton.jit
def _add(a, b):
    return a + b


# The kernels use only builtins and this module's functions (tl.reduce with _add, not tl.sum; tl.full,
# not tl.zeros): triton's library functions are decorated when triton is imported, so this way the
# kernels run in the interpreter whenever TRITON_INTERPRET=1 was set before *this* module's import.
@triton.jit
def _sum(v):
    return tl.reduce(v, 1, _add)


@triton.jit
def _channels(pid, cblocks, C, BLOCK_C: tl.constexpr):
    """Sample n and channel block (indices, mask) of program `pid`."""
    c = (pid % cblocks) * BLOCK_C + tl.arange(0, BLOCK_C)
    return pid // cblocks, c, c < C


@triton.jit
def _at(ptr, n, c, l, sn, sc, sl):
    # 64-bit only for the sample offset: one sample (C * H * W elements) is assumed to stay under 2^31
    return ptr + n.to(tl.int64) * sn + (c[:, None] * sc + l[None, :] * sl)


@triton.jit
def _positions(l0, hi, BLOCK_L: tl.constexpr):
    l = tl.multiple_of(l0, BLOCK_L) + tl.arange(0, BLOCK_L)  # chunks start at multiples of BLOCK_L
    return l, l < hi


@triton.jit
def _moments_kernel(x_ptr, mean_ptr, m2_ptr, C, cblocks, L, chunk, S, sxn, sxc, sxl,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    s = tl.program_id(1)
    lo = s * chunk
    hi = tl.minimum(lo + chunk, L)
    cnt = tl.full([BLOCK_C], 0.0, ACC)
    mean = tl.full([BLOCK_C], 0.0, ACC)
    m2 = tl.full([BLOCK_C], 0.0, ACC)
    for l0 in range(lo, hi, BLOCK_L):
        l, lmask = _positions(l0, hi, BLOCK_L)
        mask = cmask[:, None] & lmask[None, :]
        v = tl.load(_at(x_ptr, n, c, l, sxn, sxc, sxl), mask=mask, other=0.0).to(ACC)
        nb = tl.minimum(hi - l0, BLOCK_L).to(ACC)
        bmean = _sum(v) / nb
        d = tl.where(mask, v - bmean[:, None], 0.0)
        # Chan's merge of (cnt, mean, m2) with this tile's (nb, bmean, sum d^2): no E[x^2]-E[x]^2 cancellation
        tot = cnt + nb
        delta = bmean - mean
        mean += delta * (nb / tot)
        m2 += _sum(d * d) + delta * delta * (cnt * (nb / tot))
        cnt = tot
    out = (n * C + c).to(tl.int64) * S + s
    tl.store(mean_ptr + out, mean, mask=cmask)
    tl.store(m2_ptr + out, m2, mask=cmask)


@triton.jit
def _merge_splits(mean_p, m2_p, base, cmask, S, L, chunk, ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Per-channel (mean, biased variance) over all L positions from the S split moments at base + s."""
    length = L.to(ACC)
    total = tl.full([BLOCK_C], 0.0, ACC)
    for s in range(0, S):  # two passes over the splits: their mean, then deviations from it
        count = tl.minimum(chunk, L - s * chunk).to(ACC)
        total += tl.load(mean_p + base + s, mask=cmask, other=0.0) * count
    mean = total / length
    m2 = tl.full([BLOCK_C], 0.0, ACC)
    for s in range(0, S):
        count = tl.minimum(chunk, L - s * chunk).to(ACC)
        d = tl.load(mean_p + base + s, mask=cmask, other=0.0) - mean
        m2 += tl.load(m2_p + base + s, mask=cmask, other=0.0) + count * d * d
    return mean, m2 / length


@triton.jit
def _welford_lanes(lanes, lane_mean, lane_m2, v, mask):
    """Adds one value per lane (where mask) to per-lane running (count, mean, M2)."""
    lanes += tl.where(mask, 1.0, 0.0)
    delta = tl.where(mask, v - lane_mean, 0.0)
    lane_mean += delta / tl.maximum(lanes, 1.0)
    lane_m2 += delta * tl.where(mask, v - lane_mean, 0.0)
    return lanes, lane_mean, lane_m2


@triton.jit
def _merge_lanes(lanes, lane_mean, lane_m2, count):
    """(mean, M2) of every lane's values together, by Chan's merge: no E[v^2] - E[v]^2."""
    mean = tl.reduce(lanes * lane_mean, 0, _add) / count
    d = lane_mean - mean
    return mean, tl.reduce(lane_m2, 0, _add) + tl.reduce(lanes * d * d, 0, _add)


@triton.jit
def _run_moments(mean_p, m2_p, first, count, S, L, chunk, out_ptr, out_stride, STORE: tl.constexpr,
                 ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """Channels first .. first + count - 1 (flat (n, c) indices) from their split moments: the mean and M2 of
    their means and the sum of their biased variances; with STORE each channel's mean and variance are
    written to out_ptr + i and out_ptr + out_stride + i."""
    lanes = tl.full([BLOCK_C], 0.0, ACC)
    lane_mean = tl.full([BLOCK_C], 0.0, ACC)
    lane_m2 = tl.full([BLOCK_C], 0.0, ACC)
    lane_var = tl.full([BLOCK_C], 0.0, ACC)
    for j0 in range(0, count, BLOCK_C):
        i = first + j0 + tl.arange(0, BLOCK_C)
        mask = i < first + count
        mean, var = _merge_splits(mean_p, m2_p, i.to(tl.int64) * S, mask, S, L, chunk, ACC, BLOCK_C)
        if STORE:
            tl.store(out_ptr + i, mean, mask=mask)
            tl.store(out_ptr + out_stride + i, var, mask=mask)
        lanes, lane_mean, lane_m2 = _welford_lanes(lanes, lane_mean, lane_m2, mean, mask)
        lane_var += tl.where(mask, var, 0.0)
    mean, m2 = _merge_lanes(lanes, lane_mean, lane_m2, count.to(ACC))
    return mean, m2, tl.reduce(lane_var, 0, _add)


@triton.jit
def _affine_tiles(x_ptr, y_ptr, n, c, cmask, lo, hi, m, scale, shift, sxn, sxc, sxl, syn, syc, syl,
                  ACC: tl.constexpr, BLOCK_L: tl.constexpr):
    """y = (x - m) * scale + shift over positions [lo, hi) of sample n, channels c; m, scale, shift [BLOCK_C, 1]."""
    for l0 in range(lo, hi, BLOCK_L):
        l, lmask = _positions(l0, hi, BLOCK_L)
        mask = cmask[:, None] & lmask[None, :]
        v = tl.load(_at(x_ptr, n, c, l, sxn, sxc, sxl), mask=mask, other=0.0).to(ACC)
        y = (v - m) * scale + shift
        tl.store(_at(y_ptr, n, c, l, syn, syc, syl), y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _apply_kernel(x_ptr, y_ptr, m_ptr, scale_ptr, shift_ptr, C, cblocks, L, chunk, sxn, sxc, sxl, syn, syc, syl,
                  ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, L)
    m = tl.load(m_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    scale = tl.load(scale_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    shift = tl.load(shift_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    _affine_tiles(x_ptr, y_ptr, n, c, cmask, lo, hi, m, scale, shift, sxn, sxc, sxl, syn, syc, syl, ACC, BLOCK_L)


@triton.jit
def _grad_sums_kernel(x_ptr, dy_ptr, m_ptr, sdy_ptr, sdyxc_ptr, C, cblocks, L, chunk, S, sxn, sxc, sxl, sgn, sgc, sgl,
                      ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    s = tl.program_id(1)
    lo = s * chunk
    hi = tl.minimum(lo + chunk, L)
    m = tl.load(m_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    acc_dy = tl.full([BLOCK_C, BLOCK_L], 0.0, ACC)
    acc_dyxc = tl.full([BLOCK_C, BLOCK_L], 0.0, ACC)
    for l0 in range(lo, hi, BLOCK_L):
        l, lmask = _positions(l0, hi, BLOCK_L)
        mask = cmask[:, None] & lmask[None, :]
        v = tl.load(_at(x_ptr, n, c, l, sxn, sxc, sxl), mask=mask, other=0.0).to(ACC)
        g = tl.load(_at(dy_ptr, n, c, l, sgn, sgc, sgl), mask=mask, other=0.0).to(ACC)
        acc_dy += g
        acc_dyxc += g * (v - m)  # centered on the final mean: no cancellation; masked g is 0
    out = (n * C + c).to(tl.int64) * S + s
    tl.store(sdy_ptr + out, _sum(acc_dy), mask=cmask)
    tl.store(sdyxc_ptr + out, _sum(acc_dyxc), mask=cmask)


@triton.jit
def _grad_input_tiles(x_ptr, dy_ptr, dx_ptr, n, c, cmask, lo, hi, m, scale, k1, k0, sxn, sxc, sxl, sgn, sgc, sgl,
                      sdn, sdc, sdl, ACC: tl.constexpr, BLOCK_L: tl.constexpr):
    """dx = scale * dy + k1 * (x - m) + k0 on positions [lo, hi) of sample n, channels c; coefficients [BLOCK_C, 1]."""
    for l0 in range(lo, hi, BLOCK_L):
        l, lmask = _positions(l0, hi, BLOCK_L)
        mask = cmask[:, None] & lmask[None, :]
        v = tl.load(_at(x_ptr, n, c, l, sxn, sxc, sxl), mask=mask, other=0.0).to(ACC)
        g = tl.load(_at(dy_ptr, n, c, l, sgn, sgc, sgl), mask=mask, other=0.0).to(ACC)
        dx = scale * g + k1 * (v - m) + k0
        tl.store(_at(dx_ptr, n, c, l, sdn, sdc, sdl), dx.to(dx_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _grad_input_kernel(x_ptr, dy_ptr, dx_ptr, m_ptr, scale_ptr, k1_ptr, k0_ptr, C, cblocks, L, chunk,
                       sxn, sxc, sxl, sgn, sgc, sgl, sdn, sdc, sdl,
                       ACC: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_L: tl.constexpr):
    n, c, cmask = _channels(tl.program_id(0), cblocks, C, BLOCK_C)
    lo = tl.program_id(1) * chunk
    hi = tl.minimum(lo + chunk, L)
    m = tl.load(m_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    scale = tl.load(scale_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    k1 = tl.load(k1_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    k0 = tl.load(k0_ptr + n * C + c, mask=cmask, other=0.0)[:, None]
    _grad_input_tiles(x_ptr, dy_ptr, dx_ptr, n, c, cmask, lo, hi, m, scale, k1, k0, sxn, sxc, sxl, sgn, sgc, sgl,
                      sdn, sdc, sdl, ACC, BLOCK_L)


def _strides(t):
    """(n, c, l) strides with l = h * W + w, or None when H and W cannot be flattened into one stride."""
    sn, sc, sh, sw = t.stride()
    h, w = t.shape[2:]
    if h == 1:
        return sn, sc, sw
    if w == 1:
        return sn, sc, sh
    return (sn, sc, sw) if sh == w * sw else None


def _flat(t, like=None):
    """`t` and its (n, c, l) strides, copied to x's memory format only if its H, W do not flatten."""
    strides = _strides(t)
    if strides is None:
        cl = like is not None and like.is_contiguous(memory_format=torch.channels_last)
        t = t.contiguous(memory_format=torch.channels_last if cl else torch.contiguous_format)
        strides = _strides(t)
    return t, strides


@functools.lru_cache(maxsize=None)
def _programs_wanted(device_index):
    """Programs a reduction should launch to fill the GPU; the interpreter runs them one by one, so 1 there."""
    if device_index is None:
        return 1
    return 4 * torch.cuda.get_device_properties(device_index).multi_processor_count


def _plan(x, strides, reduction):
    """Block sizes, grid and l-chunk: tiles follow the contiguous axis; reductions split l only to fill the GPU."""
    n, c, h, w = x.shape
    length = h * w
    if strides[1] == 1 and strides[2] != 1:  # channels_last: coalesce along c
        block_c = min(triton.next_power_of_2(c), _MAX_BLOCK_C)
        block_l = max(1, min(triton.next_power_of_2(length), _TILE // block_c))
    else:
        block_l = min(triton.next_power_of_2(length), _MAX_BLOCK_L)
        block_c = max(1, min(triton.next_power_of_2(c), _TILE // block_l))
    cblocks = triton.cdiv(c, block_c)
    rows = n * cblocks
    tiles = triton.cdiv(length, block_l)
    if reduction:
        wanted = _programs_wanted(x.device.index if x.is_cuda else None)
        splits = min(tiles, max(1, triton.cdiv(wanted, rows)))
    else:
        splits = min(tiles, 65535)  # one tile per program; the grid's second axis is limited to 65535
    chunk = triton.cdiv(tiles, splits) * block_l
    splits = triton.cdiv(length, chunk)
    warps = 4 if block_c * block_l <= _TILE else 8
    meta = dict(cblocks=cblocks, BLOCK_C=block_c, BLOCK_L=block_l, num_warps=warps)
    return (rows, splits), chunk, meta


def _named(strides, prefix):
    """Kernel keyword arguments s{prefix}n, s{prefix}c, s{prefix}l for (n, c, l) strides."""
    return {f"s{prefix}{axis}": stride for axis, stride in zip("ncl", strides)}


def _acc(x):
    return tl.float64 if x.dtype == torch.float64 else tl.float32


def _acc_torch(x):
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _small(t, x):
    return t.to(_acc_torch(x)).contiguous()


def moment_partials(x):
    """(x, strides, mean, m2, chunk): per-(n, c, split) mean and sum of squared deviations, splits of `chunk`."""
    x, sx = _flat(x)
    n, c, h, w = x.shape
    grid, chunk, meta = _plan(x, sx, reduction=True)
    mean = torch.empty(n, c, grid[1], dtype=_acc_torch(x), device=x.device)
    m2 = torch.empty_like(mean)
    _moments_kernel[grid](x, mean, m2, c, L=h * w, chunk=chunk, S=grid[1], **_named(sx, "x"), ACC=_acc(x), **meta)
    return x, sx, mean, m2, chunk


def nc_moments(x):
    """(mean, biased var) over H, W per (n, c): per-tile moments merged with Chan's formula."""
    x, _, mean, m2, chunk = moment_partials(x)
    length = x.shape[2] * x.shape[3]
    splits = mean.shape[-1]
    if splits == 1:
        return mean[..., 0], m2[..., 0] / length
    counts = (length - torch.arange(splits, device=x.device) * chunk).clamp(max=chunk).to(mean.dtype)
    total_mean = (mean * counts).sum(-1) / length
    total_m2 = m2.sum(-1) + (counts * (mean - total_mean[..., None]) ** 2).sum(-1)
    return total_mean, total_m2 / length


def nc_apply(x, m, scale, shift):
    """y = (x - m) * scale + shift, in x's dtype and memory format."""
    x, sx = _flat(x)
    y = torch.empty_like(x)
    sy = _strides(y)
    grid, chunk, meta = _plan(x, sx, reduction=False)
    _apply_kernel[grid](x, y, _small(m, x), _small(scale, x), _small(shift, x), x.shape[1],
                        L=x.shape[2] * x.shape[3], chunk=chunk, **_named(sx, "x"), **_named(sy, "y"),
                        ACC=_acc(x), **meta)
    return y


def grad_sum_partials(x, dy, m):
    """(x, strides, dy, dy strides, sum dy, sum dy * (x - m)): sums per (n, c, split), `moment_partials`'s plan."""
    x, sx = _flat(x)
    dy, sg = _flat(dy, like=x)
    grid, chunk, meta = _plan(x, sx, reduction=True)
    n, c = x.shape[:2]
    s_dy = torch.empty(n, c, grid[1], dtype=_acc_torch(x), device=x.device)
    s_dyxc = torch.empty_like(s_dy)
    _grad_sums_kernel[grid](x, dy, _small(m, x), s_dy, s_dyxc, c, L=x.shape[2] * x.shape[3], chunk=chunk,
                            S=grid[1], **_named(sx, "x"), **_named(sg, "g"), ACC=_acc(x), **meta)
    return x, sx, dy, sg, s_dy, s_dyxc


def nc_grad_sums(x, dy, m):
    """(sum dy, sum dy * (x - m)) over H, W per (n, c)."""
    *_, s_dy, s_dyxc = grad_sum_partials(x, dy, m)
    return s_dy.sum(-1), s_dyxc.sum(-1)


def nc_grad_input(x, dy, m, scale, k1, k0):
    """dx = scale * dy + k1 * (x - m) + k0, in x's dtype and memory format."""
    x, sx = _flat(x)
    dy, sg = _flat(dy, like=x)
    dx = torch.empty_like(x)
    grid, chunk, meta = _plan(x, sx, reduction=False)
    _grad_input_kernel[grid](x, dy, dx, _small(m, x), _small(scale, x), _small(k1, x), _small(k0, x),
                             x.shape[1], L=x.shape[2] * x.shape[3], chunk=chunk, **_named(sx, "x"),
                             **_named(sg, "g"), **_named(_strides(dx), "d"), ACC=_acc(x), **meta)
    return dx
