"""Float64 Switchable Normalization written from the released code's equations (the test oracle)."""
import torch


def switch_norm(x, weight, bias, mean_logits, var_logits, running_mean=None, running_var=None,
                training=True, momentum=0.003, eps=1e-5, groups=1):
    """Returns (y, new_running_mean, new_running_var); statistics per chunk of N/groups samples."""
    n, c, h, w = x.shape
    flat = x.reshape(n, c, h * w)
    mean_in = flat.mean(-1, keepdim=True)
    if h * w > 1:
        var_in = flat.var(-1, keepdim=True)  # unbiased, as the released code
    else:
        var_in = torch.zeros_like(mean_in)  # this repository's definition for H*W == 1
    mean_ln = mean_in.mean(1, keepdim=True)
    temp = var_in + mean_in ** 2
    var_ln = temp.mean(1, keepdim=True) - mean_ln ** 2
    mw, vw = torch.softmax(mean_logits, 0), torch.softmax(var_logits, 0)
    mean = mw[0] * mean_in + mw[1] * mean_ln
    var = vw[0] * var_in + vw[1] * var_ln
    new_rm, new_rv = running_mean, running_var
    if len(mean_logits) == 3:
        if training:
            chunks = []
            means, vars_ = [], []
            for m, t in zip(mean_in.chunk(groups, 0), temp.chunk(groups, 0)):
                mean_bn = m.mean(0, keepdim=True)
                var_bn = t.mean(0, keepdim=True) - mean_bn ** 2
                means.append(mean_bn.reshape(c))
                vars_.append(var_bn.reshape(c))
                chunks.append((mean_bn.expand_as(m), var_bn.expand_as(m)))
            mean_bn = torch.cat([a for a, _ in chunks])
            var_bn = torch.cat([b for _, b in chunks])
            if running_mean is not None:
                new_rm = (1 - momentum) * running_mean + momentum * torch.stack(means).mean(0).detach()
                new_rv = (1 - momentum) * running_var + momentum * torch.stack(vars_).mean(0).detach()
        else:
            mean_bn = running_mean.reshape(1, c, 1)
            var_bn = running_var.reshape(1, c, 1)
        mean = mean + mw[2] * mean_bn
        var = var + vw[2] * var_bn
    y = (flat - mean) / (var + eps).sqrt()
    y = y.reshape(n, c, h, w) * weight.reshape(1, c, 1, 1) + bias.reshape(1, c, 1, 1)
    return y, new_rm, new_rv


def nc_moments(x):
    """Float64 per-(n, c) mean and biased variance over H, W, by the two-pass definition."""
    flat = x.double().reshape(x.shape[0], x.shape[1], -1)
    mean = flat.sum(-1) / flat.shape[-1]
    return mean, ((flat - mean[..., None]) ** 2).sum(-1) / flat.shape[-1]


def nc_apply(x, m, scale, shift):
    """Float64 (x - m) * scale + shift with per-(n, c) coefficients."""
    c = [t.double()[..., None, None] for t in (m, scale, shift)]
    return (x.double() - c[0]) * c[1] + c[2]


def nc_grad_sums(x, dy, m):
    """Float64 per-(n, c) sums of dy and of dy * (x - m) over H, W."""
    dy = dy.double()
    return dy.sum((2, 3)), (dy * (x.double() - m.double()[..., None, None])).sum((2, 3))


def nc_grad_input(x, dy, m, scale, k1, k0):
    """Float64 scale * dy + k1 * (x - m) + k0 with per-(n, c) coefficients."""
    c = [t.double()[..., None, None] for t in (m, scale, k1, k0)]
    return c[1] * dy.double() + c[2] * (x.double() - c[0]) + c[3]
