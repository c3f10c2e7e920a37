"""TrainSampler: equal disjoint full batches, per-epoch shuffles, exact resume; EvalSampler: every index once."""
import pytest

from data import EvalSampler, TrainSampler


def batches(sampler):
    keys = list(sampler)
    b = sampler.batch_size
    return [keys[i:i + b] for i in range(0, len(keys), b)]


def test_ranks_are_disjoint_equal_and_cover_the_cut_permutation():
    n, b, world = 50, 4, 3                    # 4 global batches of 12; 2 samples dropped
    ranks = [TrainSampler(n, b, r, world, seed=5, epoch=2) for r in range(world)]
    keys = [list(s) for s in ranks]
    assert all(len(k) == len(s) == 16 and s.batches_per_epoch == 4 for k, s in zip(keys, ranks))
    assert all(epoch == 2 for k in keys for _, epoch in k)
    indices = [[i for i, _ in k] for k in keys]
    union = [i for k in indices for i in k]
    assert len(set(union)) == 48 and set(union) <= set(range(n))
    # One process with the whole global batch sees the same samples: global step s is
    # rank 0's batch s, then rank 1's, then rank 2's.
    whole = [i for i, _ in TrainSampler(n, b * world, 0, 1, seed=5, epoch=2)]
    assert whole == [i for step in zip(*[batches(s) for s in ranks]) for batch in step for i, _ in batch]


def test_every_epoch_is_a_new_shuffle_shared_by_the_ranks():
    def order(epoch, seed=0, rank=0):
        return [i for i, _ in TrainSampler(64, 8, rank, 2, seed=seed, epoch=epoch)]

    assert order(0) == order(0) and order(0) != order(1) and order(0) != order(0, seed=1)
    assert sorted(order(0) + order(0, rank=1)) == list(range(64)) == sorted(order(1) + order(1, rank=1))
    assert order(0) != sorted(order(0))


@pytest.mark.parametrize("start", [0, 1, 3, 5])
def test_start_batch_yields_the_tail_of_the_epoch(start):
    sampler = TrainSampler(100, 3, 1, 2, seed=0)          # 16 batches per rank
    sampler.set_epoch(7)
    full = list(sampler)
    sampler.set_epoch(7, start_batch=start)
    tail = list(sampler)
    assert tail == full[start * 3:] and len(sampler) == len(tail) == (16 - start) * 3
    assert sampler.batches_per_epoch == 16


def test_sampler_argument_errors():
    with pytest.raises(ValueError, match="global batch"):
        TrainSampler(7, 4, 0, 2, seed=0)
    with pytest.raises(ValueError, match="start_batch"):
        TrainSampler(16, 4, 0, 2, seed=0, start_batch=3)
    with pytest.raises(ValueError, match="rank"):
        EvalSampler(10, 2, 2)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_eval_ranks_cover_every_index_once(world):
    n = 10
    shares = [list(EvalSampler(n, r, world)) for r in range(world)]
    assert sorted(i for s in shares for i in s) == list(range(n))
    assert [len(s) for s in shares] == [len(EvalSampler(n, r, world)) for r in range(world)]
    assert shares[0][:2] == ([0, world] if world < n else [0])
