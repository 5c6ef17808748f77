"""Shortcuts of the single-estimate path give the values of the general path, to the last bit."""

from __future__ import annotations

import numpy as np
import pytest

from perfsim.analytical.inference import _forward_pair, forward_time
from perfsim.cost.power import solve_clock
from perfsim.cost.price import price
from perfsim.graph.transformer import Comm, Gemm, Pass, layer_ops
from perfsim.plan.columns import build
from perfsim.plan.grid import expand

PASSES = (Pass(tokens=4096.0, seqs=2.0, q_len=2048.0, kv_len=2048.0, causal=1.0, logits_tokens=2.0),
          Pass(tokens=2.0, seqs=2.0, q_len=1.0, kv_len=2100.0, causal=0.0, logits_tokens=2.0))


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8),
                                  dict(model="mixtral-8x7b", hardware="h100-sxm", tp=2),
                                  dict(model="llama2-7b", hardware="npu"),
                                  dict(model="llama2-7b", hardware="h100-pim")])
def test_two_passes_priced_together_equal_each_priced_alone(plan):
    c = build(expand(plan))
    together = _forward_pair(c, *PASSES)
    for alone, parts in zip((forward_time(c, p)[1] for p in PASSES), together, strict=True):
        assert list(parts) == list(alone)
        for key, value in alone.items():
            assert np.array_equal(parts[key], value, equal_nan=True), key


def _recorder(read):
    """A dict type that adds every key looked up (``[key]`` or ``get``) to the set ``read``."""

    class Recorder(dict):
        def __getitem__(self, key):
            read.add(key)
            return super().__getitem__(key)

        def get(self, key, default=None):
            read.add(key)
            return super().get(key, default)

    return Recorder


def test_a_clock_solved_on_numbers_equals_the_one_solved_on_arrays():
    rng = np.random.default_rng(0)
    for _ in range(50):
        full = rng.uniform(0.1, 2.0)
        compute = rng.uniform(0.0, full)
        memory = rng.uniform(0.0, full - compute)
        args = (rng.uniform(150.0, 400.0), 0.1, rng.uniform(0.5, 0.9), (full, compute, memory, 0.5 * memory),
                60.0, rng.uniform(20.0, 100.0), rng.uniform(100.0, 500.0), rng.uniform(0.0, 100.0),
                rng.uniform(100.0, 700.0))
        scalar = solve_clock(*(np.float64(a) if not isinstance(a, tuple) else tuple(map(np.float64, a)) for a in args))
        # (six rows: more than solve_clock takes one by one on numbers, so the bisection runs on the arrays)
        array = solve_clock(*(np.array([a] * 6) if not isinstance(a, tuple) else tuple(np.array([x] * 6) for x in a)
                              for a in args))
        few = solve_clock(*(np.array([a] * 3) if not isinstance(a, tuple) else tuple(np.array([x] * 3) for x in a)
                            for a in args))
        assert np.ndim(scalar[0]) == 0 and float(scalar[0]) == float(array[0][0]) == float(few[0][2])
        assert bool(scalar[1]) == bool(array[1][0]) == bool(few[1][2])


def test_an_absent_gemm_and_a_one_rank_collective_add_nothing():
    c = build(expand(dict(model="llama2-7b", hardware="a100-80gb")))
    ops = layer_ops(c, PASSES[0], moe=False)
    extra = [Gemm("absent", 4096.0, 0.0, 4096.0), Comm("alone", "all_reduce", 1e9, 1.0)]
    base, more = price(c, ops), price(c, [*ops[:2], *extra, *ops[2:]])
    assert base.keys() == more.keys()
    assert all(np.array_equal(base[k], more[k]) for k in base)
    # the same ops with a second rank cost time: the shortcut is only for groups of one
    assert price(c, [Comm("pair", "all_reduce", 1e9, 2.0)])["communication_s"] > 0


@pytest.mark.parametrize("plan", [dict(model="llama2-7b", hardware="a100-80gb", tp=2, dp=4),
                                  dict(model="mixtral-8x7b", hardware="h100-sxm", tp=2, dp=8, ep=4, zero=3, cp=2,
                                       runtime="deepspeed", num_devices=32),
                                  dict(model="llama2-13b", hardware="a100-80gb", pp=2, dp=2, zero=3, finetune="lora")])
def test_a_recomputation_search_prices_the_passes_once_and_gets_each_options_results(plan):
    from perfsim.analytical.training import estimate_train, stage_prices
    from perfsim.plan.arguments import Recompute

    c = build(expand(dict(plan, mode="train", recompute="auto")))
    shared = stage_prices(c)
    for option in (Recompute.NONE, Recompute.SELECTIVE, Recompute.FULL):
        trial = dict(c, recompute=np.asarray(float(option)))
        alone, _ = estimate_train(trial)
        reused, _ = estimate_train(trial, shared)
        assert list(alone) == list(reused)
        for key, value in alone.items():
            assert np.array_equal(reused[key], value, equal_nan=True), key


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="mixtral-8x7b", hardware="a100-80gb", tp=2, power_cap_w=250.0),
                                  dict(model="llama2-7b", hardware="tpu-v5e", dtype="fp8"),
                                  dict(model="llama2-7b", hardware="h100-pim", gen_len=1)])
def test_a_plan_that_offloads_nothing_gets_what_its_empty_streams_give(plan, monkeypatch):
    import perfsim
    from perfsim.analytical import offload

    shortcut = perfsim.estimate(**plan)
    monkeypatch.setattr(offload, "_placed", lambda c: True)  # the streams priced, all of 0 bytes
    streamed = perfsim.estimate(**plan)
    assert shortcut.keys() == streamed.keys()
    for key in ("breakdown", "memory_per_device_gib"):
        assert shortcut[key].keys() == streamed[key].keys()
    flat = [(k, v, streamed[k]) for k, v in shortcut.items() if not isinstance(v, dict)]
    flat += [(f"breakdown.{p}.{k}", v, streamed["breakdown"][p][k]) for p in ("prefill", "decode")
             for k, v in shortcut["breakdown"][p].items()]
    assert any(k.endswith("offload_s") for k, _, _ in flat)
    for key, a, b in flat:
        assert a == b or (a != a and b != b), key


@pytest.mark.parametrize("take", [np.array([True, True]), np.array([False, False])])
def test_a_merge_that_takes_every_row_or_none_equals_the_rowwise_merge(take):
    from perfsim.analytical.evaluate import _merged
    from perfsim.plan.rows import Detail

    out = {"a": np.array([1.0, 2.0]), "b": 3.0, "c": np.array([np.nan, 4.0])}
    trial = {"c": np.array([5.0, np.nan]), "a": np.array([6.0, 7.0]), "b": np.array([8.0, 9.0])}
    detail = Detail("{:g}", np.array([1.0, 2.0]))
    checks = [(np.array([True, False]), "x", None), (False, "y", detail), (np.array([False, True]), "z", None)]
    trial_checks = [(np.array([False, True]), "x", detail), (True, "y", None), (False, "z", None)]
    merged, merged_checks = _merged(take, trial, trial_checks, out, checks)
    assert list(merged) == list(out)
    for key in out:
        assert np.array_equal(np.broadcast_to(merged[key], (2,)), np.where(take, trial[key], out[key]), equal_nan=True)
    for (mask, short, d), (m, s, od), (tm, _, td) in zip(merged_checks, checks, trial_checks, strict=True):
        assert short == s
        assert np.array_equal(np.broadcast_to(mask, (2,)), np.where(take, tm, m))
        for i in range(2):
            expected = (td if take[i] else od) or od or td
            assert (d(i) if d else None) == (expected(i) if expected else None)


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", num_devices=8, tp=8),
                                  dict(model="llama3.2-1b", hardware="h100-sxm", seq_len=1024, power_cap_w=300.0),
                                  dict(model="llama2-7b", hardware="h100-sxm", tp=2, dp=4, micro_batch=4,
                                       power_cap_w=450.0)])
def test_the_recompute_options_priced_together_give_the_search_one_at_a_time(plan):
    from perfsim.analytical.evaluate import _train_least_recompute

    c = build(expand(dict(plan, mode="train")))
    together, checks = _train_least_recompute(c)
    # a column of one row (as a sweep's block holds it) makes the search price its options one at a time
    alone, alone_checks = _train_least_recompute(dict(c, seq_len=np.array([c["seq_len"]])))
    assert list(together) == list(alone)
    for key, value in alone.items():
        assert np.array_equal(np.ravel(together[key]), np.ravel(value), equal_nan=True), key
    for (mask, short, detail), (m, s, d) in zip(checks, alone_checks, strict=True):
        assert short == s and bool(np.any(mask)) == bool(np.any(m))
        assert (detail(0) if detail else None) == (d(0) if d else None)


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=64, power_cap_w=400.0),
                                  dict(model="llama2-7b", hardware="tpu-v5e", power_cap_w=120.0),
                                  dict(model="mixtral-8x7b", hardware="npu", tp=4, gen_len=1)])
def test_passes_capped_and_powered_together_equal_each_alone(plan, monkeypatch):
    import perfsim
    from perfsim.analytical import energy
    from perfsim.cost.power import cap_passes

    c = build(expand(plan))
    pair = [dict(parts) for parts in _forward_pair(c, *PASSES)]
    alone = [dict(parts) for parts in pair]
    checks = cap_passes(c, dict(zip(("prefill", "decode"), pair)), devices_per_pass=c["pp"], together=True)
    alone_checks = cap_passes(c, dict(zip(("prefill", "decode"), alone)), devices_per_pass=c["pp"])
    assert any(p["clock_ratio"] < 1.0 for p in pair) or plan["hardware"] == "npu"
    for together, each in zip(pair, alone, strict=True):
        assert together.keys() == each.keys()
        assert all(np.array_equal(together[k], each[k], equal_nan=True) for k in each)
    for (mask, short, detail), (m, s, d) in zip(checks, alone_checks, strict=True):
        assert bool(mask) == bool(m) and short == s and detail(0) == d(0)
    # the two phases' device power in one call, or one call each
    paired = perfsim.estimate(**plan)
    monkeypatch.setattr(energy, "one_configuration", lambda c: False)
    each = perfsim.estimate(**plan)
    assert paired == each  # (NaN reads as None there)


def test_one_stage_skips_the_hand_off_that_would_cost_zero():
    """With pp 1 on every row a pass prices no hand-off: exact, because a hop between two stages costs a
    finite time (and NIC bytes) on every shipped device, however the tensor-parallel group spreads the
    stages (a NaN or inf hop times 0 stages would not be 0)."""
    from perfsim.cost.topology import group_collective, nic_bytes
    from perfsim.specs.hardware import hardware_names

    size = np.array([1.0, 1e3, 1e9])
    for name in hardware_names():
        c = build(expand(dict(model="llama2-7b", hardware=name)))
        for stride in (1.0, 2.0, 8.0, 64.0):
            for hop in (group_collective(c, "send_recv", size, 2.0, stride=stride),
                        nic_bytes(c, "send_recv", size, 2.0, stride=stride)):
                assert np.all(np.isfinite(hop)) and np.all(hop >= 0.0), (name, stride, hop)
    c = build(expand(dict(model="llama2-70b", hardware="h100-sxm", tp=8)))
    _, parts = forward_time(c, PASSES[0])
    assert parts["pipeline_s"] == 0.0 and not np.signbit(parts["pipeline_s"])
    staged = build(expand(dict(model="llama2-70b", hardware="h100-sxm", tp=4, pp=2, num_devices=8)))
    assert forward_time(staged, PASSES[0])[1]["pipeline_s"] > 0.0


@pytest.mark.parametrize("plan", [dict(model="llama2-7b", hardware="a100-80gb"),
                                  dict(model="llama2-70b", hardware="h100-sxm", runtime="vllm", tp=8),
                                  dict(model="llama2-13b", hardware="tpu-v5e", tp=4),
                                  dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=64, dp=64)])
def test_a_collective_with_nothing_to_send_or_no_second_rank_costs_nothing(plan):
    """The shortcuts for a collective that sends 0 bytes on every row (price: the LM head's unused
    logits gather or loss all-reduce) and for a group of one rank on every row (the data-parallel
    traffic of dp 1): every op kind, inside a node and across nodes, gives exactly what they take."""
    from perfsim.cost.price import _comm_cost, _Setting
    from perfsim.cost.topology import group_collective

    c = build(expand(plan))
    x = _Setting(c, False, True)
    for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"):
        for ranks in (2.0, 8.0, 64.0, np.array([2.0, 16.0])):
            terms = _comm_cost(c, x, op, 0.0, ranks, False)
            assert np.all(terms["communication_s"] == 0.0 * (1.0 - c["tp_overlap"])), (op, ranks)
            assert not np.signbit(terms["communication_s"]).any()
            assert all(np.all(terms[k] == 0.0) for k in ("link_bytes", "nic_bytes", "hbm_bytes"))
        for size in (0.0, 1e3, 1e9, np.array([1.0, 1e10])):
            for stride in (1.0, 8.0):
                t = group_collective(c, op, size, np.array([1.0, 0.5]), stride=stride)
                assert np.all(t == 0.0) and not np.signbit(t).any(), (op, size, stride)
    # with something to send and a second rank the collective costs time: the shortcuts are only for those
    assert _comm_cost(c, x, "all_reduce", 1e6, 2.0, False)["communication_s"] > 0


def test_a_device_without_pim_places_nothing_whatever_the_place_argument():
    """place_pass returns at once where no row has PIM: every mask of _masks is 0 there, even with ops
    asked onto PIM (a plan the checks then refuse)."""
    from perfsim.analytical.heterogeneous import _masks

    c = build(expand(dict(model="llama2-7b", hardware="h100-sxm")))
    c = dict(c, place_prefill_attention=1.0, place_decode_attention=1.0, place_mlp=1.0)
    for p in PASSES:
        assert all(not np.any(m) for m in _masks(c, p))
    assert any(np.any(m) for m in _masks(dict(c, has_pim=1.0), PASSES[1]))


def _same(a, b):
    """The same type, shape and bits (NaN payloads and signed zeros included)."""
    assert type(a) is type(b) and np.shape(a) == np.shape(b), (type(a), type(b), np.shape(a), np.shape(b))
    assert np.asarray(a).dtype == np.asarray(b).dtype and np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="llama2-7b", hardware="tpu-v5e"),
                                  dict(model="llama2-7b", hardware="npu"),
                                  dict(model="llama2-7b", hardware="a100-80gb"),
                                  dict(model="llama2-7b", hardware="h100-sxm", power_cap_w=250.0)])
def test_passes_within_the_limit_skip_the_clock_solve(plan, monkeypatch):
    """Where no pass draws more than the device's limit at the top clock, cap_passes returns what the
    clock solve returns there without running it: one configuration (an axis of passes) and rows alike.
    Where the limit binds (the last two plans) one configuration's passes, solved on Python numbers,
    get what the solve on an axis of passes gives, to the bit."""
    from perfsim.cost import power

    c = build(expand(plan))
    keys = ("flops", "hbm_bytes", "link_bytes", "vector_ops")
    pair = [dict(parts) for parts in _forward_pair(c, *PASSES)]
    rows = [{k: v * np.array([[1.0], [0.5], [0.25]]) if k in ("total_s", *keys) else v for k, v in p.items()}
            for p in pair]
    for p in rows:  # the parts of a span within its length, as priced
        p["compute_bound_s"] = p["total_s"] * 0.5
        p["memory_bound_s"] = p["total_s"] * 0.25
    spans = [[p["total_s"], p["compute_bound_s"], p["memory_bound_s"], p.get("memory_compute_s", 0.0)]
             + [p.get(k, 0.0) for k in keys] + [p.get("overhead_s", 0.0) + p.get("launch_s", 0.0) / c["pp"]] for p in pair]
    both = [np.array(v, dtype=float) for v in zip(*spans, strict=True)]
    solved = list(zip(*power.cap_span(c, *both[:4], *(w / c["pp"] for w in both[4:8]), both[8]), strict=True))
    solved_rows = [power.cap_span(c, p["total_s"], p["compute_bound_s"], p["memory_bound_s"],
                                  p.get("memory_compute_s", 0.0), *(np.asarray(p.get(k, 0.0)) / c["pp"] for k in keys),
                                  gap_seconds=p.get("overhead_s", 0.0) + p.get("launch_s", 0.0) / c["pp"])
                   for p in rows]
    binds = plan["hardware"] in ("a100-80gb", "h100-sxm") and plan["model"] == "llama2-7b"
    assert all(bool(np.all(clock == 1.0)) for clock, _, _ in solved + solved_rows) != binds

    def solve(*args, **kwargs):
        raise AssertionError("the clock solve ran")

    if not binds:
        monkeypatch.setattr(power, "solve_clock", solve)
    for passes, together, expected in ((pair, True, solved), (rows, False, solved_rows)):
        full = [p["total_s"] for p in passes]
        checks = power.cap_passes(c, dict(zip(("prefill", "decode"), passes)), devices_per_pass=c["pp"],
                                  together=together)
        for p, s, (clock, seconds, fits), (mask, _, _) in zip(passes, full, expected, checks, strict=True):
            _same(p["clock_ratio"], clock)
            _same(p["total_s"], seconds)
            _same(p["throttle_s"], seconds - s)
            _same(mask, ~np.asarray(fits, dtype=bool))


@pytest.mark.parametrize("clocked", [False, True])
def test_device_power_on_numbers_equals_it_on_arrays(clocked):
    from perfsim.cost.power import device_power

    rng = np.random.default_rng(1)
    c = dict(idle_w=60.0, active_w=55.0, matrix_w=310.0, tdp_w=400.0, peak_flops=9.9e14, memory_j_per_byte=6.1e-11,
             link_j_per_byte=1.3e-11, voltage_floor=0.75, pim_j_per_byte=1.1e-12)
    for _ in range(40):
        seconds = rng.uniform(1e-3, 2.0)
        work = [rng.uniform(0.0, 2e15) * seconds, rng.uniform(0.0, 4e12) * seconds, rng.uniform(0.0, 1e11) * seconds,
                0.0, rng.uniform(0.0, 1e11), rng.uniform(0.0, 1e9)]
        extra = dict(clock=rng.uniform(0.3, 1.0), full_seconds=0.8 * seconds) if clocked else {}
        numbers = device_power(c, seconds, *work, **extra)
        arrays = device_power({k: np.array([v]) for k, v in c.items()}, np.array([seconds]),
                              *(np.array([w]) for w in work), **{k: np.array([v]) for k, v in extra.items()})
        assert numbers.keys() == arrays.keys()
        for key, value in numbers.items():
            assert value.__class__ is float and value == arrays[key][0], key


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="llama2-7b", hardware="a100-80gb", power_cap_w=200.0),
                                  dict(model="llama2-7b", hardware="a100-80gb"),
                                  dict(model="llama2-7b", hardware="h100-pim"),
                                  dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=8, tp=2,
                                       power_cap_w=300.0, train_tokens=1e9),
                                  dict(model="llama2-70b", hardware="h100-sxm", mode="train", num_devices=16, tp=8,
                                       wall_energy="node")])
def test_one_configurations_power_on_numbers_equals_the_call_on_arrays(plan, monkeypatch):
    import perfsim
    from perfsim.analytical import energy

    calls = []
    on_numbers = energy._on_numbers
    monkeypatch.setattr(energy, "_on_numbers", lambda c, phases: calls.append(on_numbers(c, phases)) or calls[-1])
    numbers = perfsim.estimate(**plan)
    assert calls and calls[-1] is not None
    monkeypatch.setattr(energy, "_on_numbers", lambda c, phases: None)
    assert numbers == perfsim.estimate(**plan)  # (NaN reads as None there)


def test_the_columns_given_to_device_power_on_numbers_are_every_one_it_reads(monkeypatch):
    """A column device_power reads that is not among those turned to numbers would read as absent."""
    import perfsim
    from perfsim.analytical import energy

    read = set()

    Recorder = _recorder(read)

    on_numbers = energy._on_numbers
    monkeypatch.setattr(energy, "_on_numbers",
                        lambda c, phases: None if (cols := on_numbers(c, phases)) is None else Recorder(cols))
    for plan in (dict(model="llama2-7b", hardware="a100-80gb"), dict(model="llama2-7b", hardware="h100-pim"),
                 dict(model="llama2-70b", hardware="h100-sxm", tp=8, power_cap_w=300.0)):
        perfsim.estimate(**plan)
    assert read and read <= set(energy._POWER_COLUMNS)


def test_one_configuration_is_a_grid_of_one_row():
    from perfsim.analytical.inference import one_configuration

    assert one_configuration(build(expand(dict(model="llama2-7b", hardware="a100-80gb"))))
    assert not one_configuration(build(expand(dict(model="llama2-7b", hardware="a100-80gb", batch=[1, 8]))))
    assert one_configuration({"a": np.float64(1.0), "b": np.array(2.0), "c": 3})
    assert not one_configuration({"a": 1.0, "b": np.array([2.0])})


@pytest.mark.parametrize("mask", [True, False, np.True_, np.False_, 0.0, 2.0, np.nan, np.float64(0.0), np.float64(-1.0),
                                  np.int64(0), np.array(0.0), np.array(True), np.array([0.0, 0.0]),
                                  np.array([[0.0], [3.0]]), np.zeros(0), [0.0, 1.0], []])
def test_any_row_reads_one_value_as_np_any_does(mask):
    from perfsim.plan.rows import any_row

    got = any_row(mask)
    assert got is bool(np.any(mask))


@pytest.mark.parametrize("whole", [0.0, 1.0])
def test_the_wall_on_numbers_equals_it_on_arrays(whole):
    from perfsim.cost.power import COMPONENTS
    from perfsim.cost.wall import energy_keys

    rng = np.random.default_rng(2)
    for devices in (1.0, 6.0, 8.0, 12.0, 64.0):
        c = dict(num_devices=devices, devices_per_node=8.0, idle_w=70.0, host_w=1800.0, host_cpu_w=500.0,
                 host_nvme_w=60.0, host_nic_w=150.0, psu_efficiency=0.94, nvme_bw=2.5e10, scaleout_bw=5e10,
                 wall_whole_node=whole, pue=1.2)
        seconds = rng.uniform(1e-3, 10.0)
        device_w = rng.uniform(100.0, 700.0)
        parts = {k: rng.uniform(0.0, 100.0) * seconds for k in COMPONENTS}
        # busy for none, part or more than all of the span
        activity = dict(host_cpu_s=float(rng.choice([0.0, 0.5, 3.0])) * seconds,
                        nvme_bytes=float(rng.choice([0.0, 1e9, 1e12])), nic_bytes=float(rng.choice([0.0, 1e9, 1e13])))
        tokens = float(rng.choice([0.0, 1000.0]))
        numbers = energy_keys(c, device_w * seconds, device_w, seconds, tokens, parts, activity, numbers=True)
        arrays = energy_keys({k: np.array([v]) for k, v in c.items()}, np.array([device_w * seconds]),
                             np.array([device_w]), np.array([seconds]), np.array([tokens]),
                             {k: np.array([v]) for k, v in parts.items()},
                             {k: np.array([v]) for k, v in activity.items()})
        assert numbers.keys() == arrays.keys()
        for key, value in numbers.items():
            assert value.__class__ is float, key
            assert value == arrays[key][0] or (np.isnan(value) and np.isnan(arrays[key][0])), key


def test_an_estimate_prices_the_wall_on_numbers_reading_only_its_columns(monkeypatch):
    import perfsim
    from perfsim.analytical import energy
    from perfsim.cost import wall

    read, took = set(), []

    Recorder = _recorder(read)

    keys = energy.energy_keys

    def recorded(c, *args, numbers=False, **kwargs):
        took.append(numbers)
        return keys(Recorder(c) if numbers else c, *args, numbers=numbers, **kwargs)

    monkeypatch.setattr(energy, "energy_keys", recorded)
    for plan in (dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                 dict(model="llama2-7b", hardware="a100-80gb", wall_energy="node", pue=1.3),
                 dict(model="llama2-70b", hardware="h100-sxm", num_devices=16, tp=8, dp=2, batch=64),
                 dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=8, tp=2),
                 dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=16, tp=2, train_tokens=1e9,
                      power_cap_w=300.0)):
        perfsim.estimate(**plan)
    assert took == [True] * 5
    assert read and read <= set(wall.WALL_COLUMNS)


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="llama2-7b", hardware="h100-sxm", mode="train", num_devices=8, tp=2)])
def test_an_estimate_reads_whether_it_is_one_configuration_once(plan, monkeypatch):
    import perfsim
    from perfsim.analytical import energy, evaluate, inference

    calls = []
    one = inference.one_configuration
    for module in (evaluate, inference, energy):
        monkeypatch.setattr(module, "one_configuration", lambda c: calls.append(1) or one(c))
    perfsim.estimate(**plan)
    assert len(calls) == 1


@pytest.mark.parametrize("condition", [True, False, np.True_, np.False_, np.array(True), np.array([True, False])])
@pytest.mark.parametrize("a, b", [(1.5, np.float64(-0.0)), (np.nan, 2.0), (np.float64(np.inf), np.float64(3.0)),
                                  (1, 2.0), (np.array(1.0), 2.0), (np.array([1.0, 2.0]), 0.0)])
def test_where_one_picks_what_np_where_does(condition, a, b):
    from perfsim.plan.rows import where_one

    got, expected = where_one(condition, a, b), np.where(condition, a, b)
    assert np.shape(got) == expected.shape and np.asarray(got).dtype == expected.dtype
    assert np.array_equal(got, expected, equal_nan=True)
    assert np.array_equal(np.signbit(got), np.signbit(expected))


@pytest.mark.parametrize("value", [2.5, np.float64(-0.0), np.array(1.5), np.array([np.nan]), np.array([1.0, 2.0, 3.0]),
                                   True, np.array([4, 5, 6])])
def test_a_value_listed_for_a_few_spans_is_its_broadcast(value):
    from perfsim.cost.clock import _listed

    listed, expected = _listed(value, (3,)), np.broadcast_to(np.asarray(value, dtype=float), (3,)).tolist()
    assert [type(v) for v in listed] == [float] * 3
    assert np.array_equal(listed, expected, equal_nan=True) and np.array_equal(np.signbit(listed), np.signbit(expected))


@pytest.mark.parametrize("value", [np.float64(-0.0), np.float64(np.nan), np.True_, np.array([1.0, 2.0]), 2, 2.5, [1, 3],
                                   np.array(1.5), np.array([1, 2])])
def test_numbers_and_arrays_handed_back_as_they_are(value):
    from perfsim.plan.rows import floats, numeric

    for got, expected in ((numeric(value), np.asarray(value)), (floats(value), np.asarray(value, dtype=float))):
        assert np.shape(got) == expected.shape and np.asarray(got).dtype == expected.dtype
        assert np.array_equal(got, expected, equal_nan=True)
    kept = (np.float64, np.bool_, np.ndarray)
    assert (numeric(value) is value) == (value.__class__ in kept)
    assert (floats(value) is value) == (value.__class__ is np.float64 or getattr(value, "dtype", None) == float)


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8),
                                  dict(model="llama2-7b", hardware="tpu-v5e", num_devices=16, tp=16),
                                  dict(model="llama2-70b", hardware="a100-80gb", num_devices=16, tp=16)])
def test_collectives_priced_on_numbers_equal_those_priced_on_arrays_of_no_dimension(plan):
    from perfsim.cost.topology import collective_and_nic, group_collective, nic_bytes

    c = build(expand(plan))
    arrays = {k: np.asarray(v) if isinstance(v, np.generic) else v for k, v in c.items()}
    for op in ("all_reduce", "all_gather", "reduce_scatter", "all_to_all", "send_recv"):
        for size in (np.float64(1e5), np.float64(3e8), np.array([1e5, 3e8])):
            ranks = c["tp"]
            numbers = collective_and_nic(c, op, size, ranks)
            expected = (group_collective(arrays, op, np.asarray(size), np.asarray(ranks)),
                        nic_bytes(arrays, op, np.asarray(size), np.asarray(ranks)))
            for got, want in zip(numbers, expected, strict=True):
                assert np.shape(got) == np.shape(want) and np.asarray(got).tobytes() == np.asarray(want).tobytes()


_SPECIAL = [0.0, -0.0, 1.0, -1.0, 2.5, 5e-324, 1e308, np.inf, -np.inf, np.nan, -np.nan,
            np.frombuffer(np.uint64(0x7FF8000000000001).tobytes(), dtype=np.float64)[0]]


@pytest.mark.parametrize("a", _SPECIAL + [np.float64(v) for v in _SPECIAL[:4]])
def test_maximum_and_minimum_of_numbers_give_what_numpy_gives_bit_for_bit(a):
    from perfsim.plan.rows import maximum, minimum

    for b in [*_SPECIAL, np.float64(-0.0), np.float64(np.nan), np.array([0.0, -0.0, np.nan]), np.array(-0.0)]:
        for mine, theirs in ((maximum, np.maximum), (minimum, np.minimum)):
            got, expected = mine(a, b), theirs(a, b)
            assert type(got) is type(expected) and np.shape(got) == np.shape(expected)
            assert np.asarray(got).tobytes() == np.asarray(expected).tobytes()


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", num_devices=8, tp=8),
                                  dict(model="mixtral-8x7b", hardware="h100-sxm", num_devices=8, tp=2, ep=4, cp=2),
                                  dict(model="deepseek-v2-lite", hardware="h100-sxm", num_devices=8, dtype="fp8")])
def test_a_training_configurations_ops_hold_numbers_not_arrays_of_no_dimension(plan):
    # (NumPy's arithmetic on an array of no dimension costs about ten times its cost on a number)
    from dataclasses import fields

    from perfsim.analytical.training import micro_pass
    from perfsim.graph.transformer import head_ops

    c = build(expand(dict(plan, mode="train", recompute="none")))
    p = micro_pass(c)
    for ops in (layer_ops(c, p, moe=False), layer_ops(c, p, moe=True), head_ops(c, p)):
        for op in ops:
            for field in fields(op):
                value = getattr(op, field.name)
                assert not (isinstance(value, np.ndarray) and value.ndim == 0), (op.name, field.name)


@pytest.mark.parametrize("values", [(np.float64(2.0), 3.0), (2, np.float64(-0.0)), (np.ones(3), 1.0), (np.array(1.0), 2.0),
                                    (np.ones((2, 1)), np.zeros(3), 4.0), (True, 2.0)])
def test_zeros_of_numbers_are_a_number_and_of_arrays_their_broadcast(values):
    from perfsim.plan.rows import zeros

    got, expected = zeros(*values), np.zeros(np.broadcast(*values).shape)
    numbers = all(v.__class__ in (float, np.float64, int) for v in values)
    assert (type(got) is np.float64) if numbers else (type(got) is np.ndarray and got.shape == expected.shape)
    assert np.asarray(got).tobytes() == expected.tobytes()


def test_a_training_steps_data_parallel_terms_of_one_rank_are_numbers():
    from perfsim.analytical.data_parallel import dp_traffic

    c = build(expand(dict(model="llama2-70b", hardware="h100-sxm", mode="train", num_devices=8, tp=8)))
    traffic = dp_traffic(c, 1e9, 1e9, c["dp"], c["tp"])
    assert all(type(v) is np.float64 for v in (*traffic["seconds"], *traffic["nic"]))


@pytest.mark.parametrize("value, placed", [(0.0, False), (-0.0, False), (np.float64(0.25), True), (np.nan, True),
                                           (np.array([0.0, 0.0]), False), (np.array([0.0, np.nan]), True)])
def test_a_state_is_placed_off_the_device_where_some_fraction_is_not_zero(value, placed):
    from perfsim.analytical.offload import _placed

    c = build(expand(dict(model="llama2-7b", hardware="a100-80gb")))
    assert _placed(c) is False
    assert _placed(dict(c, kv_frac_nvme=value)) is placed


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", mode="train", num_devices=8, tp=8),
                                  dict(model="llama2-70b", hardware="a100-80gb", batch=512, prompt_len=4096),
                                  dict(model="llama2-7b", hardware="a100-80gb", power_cap_w=60.0),
                                  dict(model="llama2-13b", hardware="a100-40gb", mode="train", num_devices=2, tp=2,
                                       recompute="auto", power_cap_w=80.0)])
def test_one_rows_messages_equal_those_read_for_many_rows(plan):
    from perfsim.analytical import evaluate as ev

    c = build(expand(plan))
    one = ev.one_configuration(c)
    fn = ev._train_least_recompute if plan.get("mode") == "train" else ev._inference_best_offload
    _, checks = fn(c, one)
    flagged = [detail for mask, _, detail in ev._plan_checks(c) + checks if detail is not None and np.any(mask)]
    assert flagged
    for detail in flagged:
        assert ev._messages(detail, np.array([0]), (1,)) == detail.rows(np.array([0]), (1,))


@pytest.mark.parametrize("a, b, shared", [(2.0, 2.0, True), (np.float64(8.0), 8.0, True), (0.0, -0.0, False),
                                          (np.nan, np.nan, True), (1.0, 2.0, False), (1, 1.0, True)])
def test_a_field_two_passes_share_to_the_bit_stays_one_number(a, b, shared):
    from perfsim.analytical.inference import _shared

    got = _shared(a, b)
    assert (type(got) is np.float64) == shared
    assert np.asarray(got if shared else got[0]).tobytes() == np.float64(a).tobytes()


@pytest.mark.parametrize("plan", [dict(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8),
                                  dict(model="mixtral-8x7b", hardware="a100-80gb", tp=2, power_cap_w=250.0),
                                  dict(model="deepseek-v2-lite", hardware="h100-sxm", tp=8, dtype="fp8")])
def test_passes_with_shared_fields_priced_together_equal_each_alone_bit_for_bit(plan):
    c = build(expand(plan))
    together = _forward_pair(c, *PASSES)
    for alone, parts in zip((forward_time(c, p)[1] for p in PASSES), together, strict=True):
        assert list(parts) == list(alone)
        for key, value in alone.items():
            assert np.asarray(parts[key], dtype=float).tobytes() == np.asarray(value, dtype=float).tobytes(), key
