"""Benchmark: the fixed cost per call, the rows of the README's before/after table.

Run from a checkout: ``python benchmarks/bench_fixed_cost.py`` (add ``--serve`` for the three
100,000-request ``serve`` runs). To compare two versions on a shared machine, run it in each checkout
in turn, two or three rounds, and take each row's best: other work on the cores only ever adds time.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import os
import sys

from bench_peers import cli_wall, median_call
from bench_sweep import ESTIMATE, INFERENCE_1000, bench, warm_estimate

import perfsim
from perfsim.plan import recall

#: a configuration with the defaults: one device, no collectives
DEFAULTS = dict(model="llama2-7b", hardware="a100-80gb")
#: a training step with the defaults (recompute auto: the least recomputation that fits is searched)
TRAINING = dict(model="llama2-70b", hardware="h100-sxm", mode="train", num_devices=8, tp=8)


def new_lengths(calls: int) -> float:
    """Median time of ``calls`` estimates of :data:`ESTIMATE`, each at a batch and prompt length this process
    has not estimated before (a notebook's loop over batch sizes: only what depends on neither is kept)."""
    plans = iter([{**ESTIMATE, "batch": 1 + i % 64, "prompt_len": 2049 + i // 64} for i in range(calls + 1)])
    return median_call(lambda: perfsim.estimate(**next(plans)), calls)


def cli_median(runs: int) -> float:
    cmd = [sys.executable, "-m", "perfsim.cli", "estimate", "--model", "llama2-70b", "--hardware", "a100-80gb",
           "--tp", "8", "--format", "json"]
    return cli_wall(cmd, runs)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=1000, help="calls of one warm estimate (the median is reported)")
    parser.add_argument("--serve", action="store_true", help="also the three serve runs of bench_serve.py")
    args = parser.parse_args()
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    whole, fixed = warm_estimate(args.calls)
    print(f"| one warm `perfsim.estimate`, Llama-2-70B on 8 x H100, batch 8 | {whole * 1e3:.2f} ms |")
    print(f"| the same, each call a batch and length not estimated before (batch 1..64, prompt_len 2049 + i // 64) | "
          f"{new_lengths(args.calls) * 1e3:.2f} ms |")
    print(f"| the same call repeated (its result arrays recalled: perfsim.plan.recall) | "
          f"{median_call(lambda: perfsim.estimate(**ESTIMATE), args.calls) * 1e3:.3f} ms |")
    recall.ON = False  # the rows below: each estimate made, none recalled
    print(f"| one warm `perfsim.estimate`, Llama-2-7B on one A100, defaults | "
          f"{median_call(lambda: perfsim.estimate(**DEFAULTS), args.calls) * 1e3:.2f} ms |")
    print(f"| its fixed cost (the cost models' results precomputed) | {fixed * 1e3:.2f} ms |")
    print(f"| one warm `perfsim.estimate`, Llama-2-70B training step on 8 x H100, tp 8 | "
          f"{median_call(lambda: perfsim.estimate(**TRAINING), max(args.calls // 5, 1)) * 1e3:.2f} ms |")
    _, rows, best, rate = bench("1,000 rows", INFERENCE_1000, 40)
    print(f"| inference sweep of {rows:,} rows (best of 40) | {best * 1e3:.1f} ms ({rate:,.0f}/s) |")
    print(f"| `perfsim estimate` as a process (median of 7) | {cli_median(7):.2f} s |")
    if args.serve:
        import bench_serve

        offline = {k: v for k, v in bench_serve.SCENARIO.items() if k != "arrival_rate"}
        for name, scenario in (("Poisson", bench_serve.SCENARIO),
                               ("chunked prefill", {**bench_serve.SCENARIO, "scheduler": "chunked-prefill"}),
                               ("offline", offline)):
            best, _ = bench_serve.bench(scenario, 100_000, 2)
            print(f"| `perfsim serve`, 100,000 requests, {name} | {best:.2f} s |")
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
