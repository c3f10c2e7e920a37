"""BatchNorm2d with statistics groups against torch's nn.BatchNorm2d run on each chunk."""
import pytest
import torch

from norms import BatchNorm2d


def test_state_dict_equals_torch_batchnorm():
    ours, theirs = BatchNorm2d(6), torch.nn.BatchNorm2d(6)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in theirs.state_dict().items()}


@pytest.mark.parametrize("k", [1, 2, 4])
def test_stat_groups_equal_torch_batchnorm_on_each_chunk(k):
    torch.manual_seed(0)
    ours = BatchNorm2d(5, momentum=0.2, stat_groups=k).double()
    with torch.no_grad():
        ours.weight.uniform_(0.5, 1.5)
        ours.bias.uniform_(-1, 1)
    x = (torch.randn(8, 5, 4, 3, dtype=torch.float64) * 2 + 1).requires_grad_()
    dy = torch.randn_like(x)
    (ours(x) * dy).sum().backward()
    xs = x.detach().clone().requires_grad_()
    outs, means, vars_ = [], [], []
    refs = []
    for chunk in xs.chunk(k):
        ref = torch.nn.BatchNorm2d(5, momentum=0.2).double()
        ref.load_state_dict({**ours.state_dict(), "running_mean": torch.zeros(5), "running_var": torch.ones(5),
                             "num_batches_tracked": torch.tensor(0)})
        outs.append(ref(chunk))
        means.append(ref.running_mean)
        vars_.append(ref.running_var)
        refs.append(ref)
    (torch.cat(outs) * dy).sum().backward()
    torch.testing.assert_close(ours(x.detach()), torch.cat(outs).detach(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(x.grad, xs.grad, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.weight.grad, sum(r.weight.grad for r in refs), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours.bias.grad, sum(r.bias.grad for r in refs), rtol=1e-10, atol=1e-10)
    # after two steps the EMA moved twice toward the chunk-average statistics (unbiased variance)
    fresh = BatchNorm2d(5, momentum=0.2, stat_groups=k).double()
    fresh(x.detach())
    torch.testing.assert_close(fresh.running_mean, torch.stack(means).mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fresh.running_var, torch.stack(vars_).mean(0), rtol=1e-12, atol=1e-12)
    assert int(fresh.num_batches_tracked) == 1


def test_eval_uses_running_stats_like_torch():
    ours, ref = BatchNorm2d(3, stat_groups=2), torch.nn.BatchNorm2d(3)
    for m in (ours, ref):
        m.running_mean.fill_(0.5)
        m.running_var.fill_(2.0)
        m.eval()
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(ours(x), ref(x))


def test_channels_last_and_bfloat16():
    bn = BatchNorm2d(8, stat_groups=2)
    x = torch.randn(4, 8, 6, 6) * 3 + 1
    y = bn(x)
    y_cl = bn(x.contiguous(memory_format=torch.channels_last))
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, y)
    y_bf16 = bn(x.bfloat16())
    assert y_bf16.dtype == torch.bfloat16
    torch.testing.assert_close(y_bf16.float(), y, rtol=3e-2, atol=3e-2)


def test_errors():
    with pytest.raises(ValueError, match="stat_groups=3"):
        BatchNorm2d(4, stat_groups=3)(torch.randn(4, 4, 2, 2))
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchNorm2d(4, stat_groups=2)(torch.randn(2, 4, 1, 1))
    with pytest.raises(ValueError, match="4-D"):
        BatchNorm2d(4)(torch.randn(2, 4))
