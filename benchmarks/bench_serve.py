"""Benchmark: wall time of the serving simulator on a large request set.

Run: ``python benchmarks/bench_serve.py`` (default 100,000 requests of Llama-2-70B on 8 H100s,
TP 8, continuous batching, lognormal lengths around 1024 prompt / 256 generated tokens, Poisson
arrivals just above what the instance serves). Prints Markdown rows for the README's speed table.
Not part of the test suite.
"""

from __future__ import annotations

import argparse
import math
import time

import perfsim

SCENARIO = dict(
    model="llama2-70b", hardware="h100-sxm", tp=8, scheduler="continuous", arrival_rate=10.0,
    prompt_len={"dist": "lognormal", "mean": 1024, "sigma": 0.5, "max": 4096},
    gen_len={"dist": "lognormal", "mean": 256, "sigma": 0.5, "max": 1024},
)


def bench(scenario, requests, repeat):
    best, result = math.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = perfsim.serve(**scenario, num_requests=requests)
        best = min(best, time.perf_counter() - t0)
    assert result["completed"] == requests, result["reason"]
    return best, result


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    offline = {k: v for k, v in SCENARIO.items() if k != "arrival_rate"}
    variants = (("`perfsim serve` Llama-2-70B, 8 x H100 TP8, continuous, Poisson", SCENARIO),
                ("the same, chunked prefill", {**SCENARIO, "scheduler": "chunked-prefill"}),
                ("the same, offline (all requests at t = 0)", offline),
                ("the same, static batching", {**SCENARIO, "scheduler": "static"}),
                ("the same, disaggregated: 4 devices prefill, 4 decode (TP 4 each)",
                 {**SCENARIO, "tp": 4, "disaggregate": "4:4"}))
    print("| benchmark | requests | iterations | best wall time | simulated requests/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, scenario in variants:
        best, result = bench(scenario, args.requests, args.repeat)
        iterations = result["breakdown"]["iterations"]
        print(f"| {name} | {args.requests:,} | {iterations:,} | {best:.2f} s | {args.requests / best:,.0f} |")


if __name__ == "__main__":
    main()
