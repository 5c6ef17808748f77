"""The busiest rank of an expert-parallel group: multinomial routing, expected maximum of normals."""

import math

import numpy as np
import pytest

from perfsim.graph.transformer import expected_max_normal, rank_imbalance


def test_expected_maximum_of_normals_matches_closed_forms():
    # E[max of 2] = 1/sqrt(pi); E[max of 3] = 3 / (2 sqrt(pi)) (David and Nagaraja, Order Statistics)
    got = expected_max_normal([1, 2, 3])
    assert got == pytest.approx([0.0, 1.0 / math.sqrt(math.pi), 1.5 / math.sqrt(math.pi)], abs=1e-9)
    assert np.all(np.diff(expected_max_normal(np.arange(1, 65))) > 0)


def _columns(ep, experts=64.0, top_k=4.0, capacity=np.nan):
    return dict(ep=np.asarray(ep, dtype=float), experts=experts, top_k=top_k, capacity_factor=capacity)


@pytest.mark.parametrize("ep, tokens", [(4, 64), (8, 256), (16, 1024)])
def test_busiest_rank_matches_a_simulated_router(ep, tokens):
    """Monte Carlo: route every token to top_k distinct experts at random, count per rank, take the
    largest; its mean over many layers is what the closed form predicts (within a few per cent)."""
    experts, top_k = 64, 4
    rng = np.random.default_rng(7)
    trials = 800
    ranks = np.repeat(np.arange(ep), experts // ep)
    picks = np.argpartition(rng.random((trials, tokens, experts), dtype=np.float32), top_k, axis=2)[:, :, :top_k]
    counts = np.stack([(ranks[picks] == r).sum(axis=(1, 2)) for r in range(ep)], axis=1)
    simulated = counts.max(axis=1).mean() / (tokens * top_k / ep)
    predicted = float(rank_imbalance(_columns(ep, experts, top_k), tokens))
    assert predicted == pytest.approx(simulated, rel=0.03)


def test_imbalance_fades_with_tokens_and_vanishes_without_expert_parallelism():
    tokens = np.array([16.0, 256.0, 4096.0, 65536.0])
    f = rank_imbalance(_columns(8), tokens)
    assert np.all(f > 1.0) and np.all(np.diff(f) < 0)
    assert rank_imbalance(_columns(1), tokens) == pytest.approx(1.0)
    assert rank_imbalance(_columns(8, capacity=1.25), tokens) == pytest.approx(1.0)
