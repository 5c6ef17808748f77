"""A grouped expert GEMM pads each expert's rows to whole tiles on its own: with a router balanced
only in expectation the experts' token counts spread about their mean, and the kernel's tiles are
the expected ones of those counts (perfsim.cost.roofline.expected_tiles), not those of the mean."""

import math

import numpy as np
import pytest

from perfsim.cost.price import price
from perfsim.cost.roofline import expected_tiles, gemm_efficiency
from perfsim.graph.transformer import Gemm, Pass, expert_spread, moe_mlp_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand


def _normal_tiles(m, sd, tile):
    """sum over j >= 0 of P(X >= j tile + 1/2), X normal (m, sd): by erfc term by term."""
    return sum(0.5 * math.erfc(-((m - 0.5 - j * tile) / sd) / math.sqrt(2.0)) for j in range(int((m + 12 * sd) / tile) + 2))


@pytest.mark.parametrize("m, sd, tile", [(128.0, 11.0, 128.0), (133.0, 11.5, 128.0), (60.0, 7.0, 64.0),
                                         (300.0, 40.0, 128.0), (2048.0, 45.0, 128.0), (10.0, 3.0, 16.0)])
def test_expected_tiles_is_the_mean_ceiling_of_the_spread_counts(m, sd, tile):
    assert float(expected_tiles(m, sd, tile)) == pytest.approx(_normal_tiles(m, sd, tile), abs=2e-4)


def test_expected_tiles_limits():
    # no spread: the whole tiles of the mean
    assert expected_tiles([1.0, 128.0, 129.0, 256.0], 0.0, 128.0).tolist() == [1.0, 1.0, 2.0, 2.0]
    # a spread of several tiles: the fractional part is uniform, half a tile on average
    assert float(expected_tiles(5000.0, 300.0, 128.0)) == pytest.approx((5000.0 - 0.5) / 128.0 + 0.5, rel=1e-9)
    # a mean on a tile boundary: half the experts spill into one more tile
    assert float(expected_tiles(128.5, 10.0, 128.0)) == pytest.approx(1.5, abs=1e-3)
    # vectorised over every argument
    assert expected_tiles(np.array([[128.0], [256.0]]), np.array([0.0, 10.0]), 128.0).shape == (2, 2)


def test_spread_rows_take_the_expected_tiles_of_a_grouped_gemm():
    # 64 experts of 133 rows (n 4096) on 132 units: 2 tiles each without spread, 1.65 with a
    # spread of 11.5 (the share of experts over 128 rows): the efficiency rises by about 2 / 1.65
    # (the waves' quantisation aside, a few per cent at 26 waves)
    args = (133.0, 4096.0, 64.0, 128.0, 128.0, 132.0, 0.8)
    flat, spread = gemm_efficiency(*args), gemm_efficiency(*args, m_sd=11.5)
    tiles = float(expected_tiles(133.0, 11.5, 128.0))
    assert 1.6 < tiles < 1.7
    assert float(spread) / float(flat) == pytest.approx(2.0 / tiles, rel=0.05)
    # no spread: the whole tiles of the mean, as before
    assert float(gemm_efficiency(*args, m_sd=0.0)) == float(flat)


def _moe_columns(capacity=None):
    plan = {"model": "deepseek-v3", "hardware": "b200", "num_devices": 4, "tp": 1, "dp": 4, "ep": 4,
            "dtype": "fp4", "runtime": "trt-llm"}
    if capacity:
        plan["capacity_factor"] = capacity
    return build(expand(plan))


def test_expert_gemms_carry_the_binomial_spread_of_the_group_tokens():
    c = _moe_columns()
    p = Pass(tokens=1024.0, seqs=8.0, q_len=128.0, kv_len=128.0, causal=1.0, logits_tokens=8.0)
    experts = {op.name: op for op in moe_mlp_ops(c, p) if op.name.startswith("experts_")}
    group = 4096.0  # 4 ranks of 1024 tokens (DEP4)
    sd = math.sqrt(group * (8 / 256) * (1 - 8 / 256))
    for op in experts.values():
        assert float(op.m_sd) == pytest.approx(sd, rel=1e-12)
    assert float(expert_spread(_moe_columns(1.25), group)) == 0.0  # padded buffers: every expert alike
    # priced: the up-projection of 133 rows per expert lies between one and two whole tiles each
    ops = [Gemm("experts_up", 133.0, 4096.0, 7168.0, groups=64.0, expert=True, m_sd=m_sd) for m_sd in (0.0, sd)]
    t = [float(price(c, [op])["gemm_s"]) for op in ops]
    one = float(price(c, [Gemm("experts_up", 128.0, 4096.0, 7168.0, groups=64.0, expert=True)])["gemm_s"])
    assert one < t[1] < t[0]


@pytest.mark.parametrize("m, sd, n, groups, units", [(4175.0, 55.4, 4096.0, 1.0, 132.0), (133.0, 11.5, 4096.0, 64.0, 132.0),
                                                     (1024.0, 31.0, 4096.0, 64.0, 148.0), (520.0, 22.0, 7168.0, 64.0, 148.0)])
def test_spread_efficiency_matches_sampled_expert_counts(m, sd, n, groups, units):
    """Sampled counts per expert, each padded to whole 128-row tiles, the tiles' total run in whole
    waves: the efficiency (useful work over the work of the waves, averaged) agrees with the closed
    form to 1 %, one expert per rank included (its waves' count is random too)."""
    rng = np.random.default_rng(7)
    rows = np.maximum(np.round(rng.normal(m, sd, (20000, int(groups)))), 0.0)
    tiles = np.ceil(rows / 128.0).sum(axis=1) * math.ceil(n / 128.0)
    waves = np.ceil(tiles / units)
    sampled = 0.8 * (rows.sum(axis=1) * n).mean() / (waves * units * 128.0 * 128.0).mean()
    assert float(gemm_efficiency(m, n, groups, 128.0, 128.0, units, 0.8, m_sd=sd)) == pytest.approx(sampled, rel=0.01)
