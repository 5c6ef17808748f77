"""The ``perfsim`` command: a thin layer over :mod:`perfsim.api`.

Bad input exits with code 2 and one line naming the field (and file:line), never a traceback.
"""

from __future__ import annotations

import json
import math
import os
import sys

import click
import numpy as np

from perfsim import api
from perfsim.errors import InputError
from perfsim.specs.yamlio import loads_yaml

_INT_OPTIONS = ("num_devices", "tp", "pp", "dp", "cp", "ep", "zero", "zero_shard_size", "virtual_stages",
                "seq_len", "global_batch", "micro_batch", "batch", "prompt_len", "gen_len", "lora_rank")


def _fail(message: str):
    click.echo(f"perfsim: error: {message}", err=True)
    sys.exit(2)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.bool_):
        return bool(value)
    return str(value)


def _clean(value):
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    return value


def _echo_json(data):
    click.echo(json.dumps(_clean(data), indent=2, default=_json_default))


def _scalar(text: str):
    """Parse a command-line value as YAML would (numbers, booleans, mappings), else a string."""
    try:
        value = loads_yaml(text, "<command line>")
    except InputError:
        return text
    if isinstance(value, str):  # YAML 1.1 reads "2e12" as a string; a number is meant
        try:
            return float(value) if value.strip().lower() not in ("nan", "inf", "-inf", "infinity") else value
        except ValueError:
            return value
    return value if value is not None else text


def _parse_pairs(pairs, option):
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise InputError(f"expected KEY=VALUE, got {pair!r}", field=option)
        key, value = pair.split("=", 1)
        out[key.strip()] = _scalar(value.strip())
    return out


def _fmt_s(x):
    if x is None:
        return "-"
    if x >= 1:
        return f"{x:.3f} s"
    if x >= 1e-3:
        return f"{x * 1e3:.2f} ms"
    return f"{x * 1e6:.1f} us"


def _fmt(x, spec: str) -> str:
    """``format(x, spec)``, or ``-`` where the number is missing (an infeasible row)."""
    return "-" if x is None else format(x, spec)


def _fmt_j(x) -> str:
    if x is None:
        return "-"
    for scale, unit in ((3.6e9, "MWh"), (3.6e6, "kWh"), (1e3, "kJ")):
        if abs(x) >= scale:
            return f"{x / scale:,.2f} {unit}"
    return f"{x:,.2f} J"


def _power_lines(result: dict) -> list:
    """Power and energy lines of the estimate table."""
    lines = ["power and energy"]
    mean = f"{_fmt(result['power_w_per_device'], ',.0f')} W per device"
    if "prefill_power_w_per_device" in result:
        mean += (f" (prefill {_fmt(result['prefill_power_w_per_device'], ',.0f')} W, "
                 f"decode {_fmt(result['decode_power_w_per_device'], ',.0f')} W)")
    lines.append(f"  {'mean power':<20}{mean}")
    lines.append(f"  {'server at the wall':<20}{_fmt(result['power_w_per_node'], ',.0f')} W per node")
    clocks = {phase: part.get("clock_ratio") for phase, part in (result.get("breakdown") or {}).items()
              if isinstance(part, dict) and part.get("clock_ratio") is not None}
    if clocks:  # under a power cap
        lines.append(f"  {'clock under the cap':<20}"
                     + ", ".join(f"{phase} {_fmt(v, '.0%')}" for phase, v in clocks.items()))
    if result.get("time_to_train_s") is not None:
        lines.append(f"  {'time to train':<20}{_fmt(result['time_to_train_s'] / 86400.0, ',.2f')} days")
    span = "job" if result.get("time_to_train_s") is not None else (
        "step" if result.get("mode") == "train" else "request batch")
    lines.append(f"  {'energy':<20}{_fmt_j(result['energy_j'])} accelerators, "
                 f"{_fmt_j(result['energy_wall_j'])} at the wall (one {span})")
    energy = (result.get("breakdown") or {}).get("energy") or {}
    used = [(name, energy.get(f"host_{key}_j")) for key, name in (("cpu", "CPUs"), ("nvme", "NVMe"), ("nic", "NICs"))]
    used = [(name, j) for name, j in used if j]
    if used and energy.get("host_j") is not None:  # host parts the plan keeps busy
        lines.append(f"  {'hosts':<20}{_fmt_j(energy['host_j'])}, of which "
                     + ", ".join(f"{name} {_fmt_j(j)}" for name, j in used))
    per = "trained" if result.get("mode") == "train" else "generated"
    lines.append(f"  {'energy per token':<20}{_fmt_j(result['energy_j_per_token'])} per {per} token")
    return lines


def _table(result: dict) -> str:
    lines = []
    feasible = result["feasible"]
    lines.append(f"feasible: {'yes' if feasible else 'NO'}" + ("" if feasible else f"  ({result['reason']})"))
    if result.get("mode") == "train":
        lines.append(f"step time            {_fmt_s(result['step_time_s'])}")
        lines.append(f"tokens/s (job)       {_fmt(result['tokens_per_s'], ',.0f')}")
        lines.append(f"MFU / HFU            {_fmt(result['mfu'], '.1%')} / {_fmt(result['hfu'], '.1%')}")
        lines.append(f"TFLOP/s per device   {_fmt(result['model_tflops_per_device'], '.1f')} model, "
                     f"{_fmt(result['hardware_tflops_per_device'], '.1f')} hardware")
        lines.append(f"bubble fraction      {_fmt(result['bubble_fraction'], '.1%')}")
        lines.append("")
        lines.append("where the step goes")
        for key, value in result["breakdown"]["train"].items():
            if key == "micro_batches":
                lines.append(f"  {'micro-batches':<22}{_fmt(value, ',.0f')}")
            elif key.endswith("_s"):
                lines.append(f"  {key[:-2].replace('_', ' '):<22}{_fmt_s(value)}")
        if "timeline" in result:
            step = result["timeline"]
            how = "simulated" if step["simulated"] else ("closed form only" if result["feasible"] else "not simulated")
            lines.append("")
            lines.append(f"timeline step         {_fmt_s(step['step_time_s'])} ({how})"
                         + (f", trace written to {step['trace_out']}" if step["trace_out"] else ""))
    else:
        lines.append(f"TTFT (prefill)       {_fmt_s(result['ttft_s'])}")
        lines.append(f"TPOT (decode step)   {_fmt_s(result['tpot_s'])}")
        lines.append(f"end-to-end latency   {_fmt_s(result['e2e_latency_s'])}")
        lines.append(f"throughput           {_fmt(result['throughput_tokens_per_s'], ',.1f')} generated tokens/s")
        lines.append(f"KV cache capacity    {_fmt(result['kv_cache_capacity_tokens'], ',.0f')} tokens "
                     f"({_fmt(result['max_concurrency'], ',.0f')} requests of this length)")
        lines.append("")
        lines.append(f"{'where the time goes':<22}{'prefill':>12}{'decode step':>14}")
        pre, dec = result["breakdown"]["prefill"], result["breakdown"]["decode"]
        offloading = any((pre.get(k) or 0) > 0 or (dec.get(k) or 0) > 0 for k in ("offload_s", "host_attention_s"))
        for key in ("gemm_s", "attention_s", "elementwise_s", "communication_s", "pipeline_s", "overhead_s",
                    *(("host_attention_s", "offload_s") if offloading else ()), "total_s"):
            lines.append(f"  {key[:-2].replace('_', ' '):<20}{_fmt_s(pre[key]):>12}{_fmt_s(dec[key]):>14}")
        lines.append(f"  {'(memory-bound part)':<20}{_fmt_s(pre['memory_bound_s']):>12}"
                     f"{_fmt_s(dec['memory_bound_s']):>14}")
        lines.append(f"  {'(HBM lower bound)':<20}{'':>12}{_fmt_s(dec['hbm_bound_s']):>14}")
        if pre.get("pim_s") or dec.get("pim_s") or pre.get("pim_link_s"):
            for key, label in (("pim_s", "on PIM"), ("pim_link_s", "PIM link"), ("overlap_s", "hidden by overlap")):
                lines.append(f"  {label:<20}{_fmt_s(pre[key]):>12}{_fmt_s(dec[key]):>14}")
            subs = _fmt(pre["sub_batches"], ">12.0f") + _fmt(dec["sub_batches"], ">14.0f")
            lines.append(f"  {'sub-batches':<20}{subs}")
        lines.append(f"bottleneck device    {result.get('bottleneck_device')}")
    lines.append("")
    lines.extend(_power_lines(result))
    lines.append("")
    lines.append("memory per device (GiB)")
    for key, value in result["memory_per_device_gib"].items():
        lines.append(f"  {key:<20}{_fmt(value, '10.2f')}")
    tiers = result.get("memory_per_tier_gib") or {}
    if (tiers.get("cpu") or 0) > 0 or (tiers.get("nvme") or 0) > 0:
        lines.append("memory per tier (GiB)")
        for key, where in (("gpu", "per device"), ("cpu", "per node"), ("nvme", "per node")):
            lines.append(f"  {key:<20}{_fmt(tiers.get(key), '10.2f')}  {where}")
    return "\n".join(lines)


def _system_options():
    """Options naming the model and the hardware (with what-if overrides), shared by commands."""
    return [
        click.option("--model", required=True, help="zoo name (perfsim list models), YAML file or HF config.json"),
        click.option("--hardware", required=True, help="zoo name (perfsim list hardware) or YAML file"),
        click.option("--set", "whatif", multiple=True, metavar="KEY=VALUE",
                     help="what-if override of a hardware number, e.g. --set hbm_bandwidth_gb_s=4800"),
    ]


def _plan_options(fn):
    opts = [
        *_system_options(),
        click.option("--mode", default=None, help="inference (default) or train"),
        click.option("--dtype", default=None, help="bf16 (default), fp16, fp8, fp32, int8, fp4, int4"),
        click.option("--weight-dtype", default=None), click.option("--kv-dtype", default=None),
        click.option("--sp/--no-sp", default=None, help="sequence parallelism with TP"),
        click.option("--schedule", default=None), click.option("--recompute", default=None),
        click.option("--finetune", default=None), click.option("--runtime", default=None, help="engine profile"),
        click.option("--gpu-memory-utilization", type=str, default=None),
        click.option("--place", "place", multiple=True, metavar="KEY=DEVICE",
                     help="put an op group on PIM, e.g. --place decode_attention=pim (repeatable)"),
        click.option("--pim-mode", default=None, help="concurrent (dual row buffers) or blocked"),
        click.option("--sub-batches", default=None, help="1, or 2 to interleave two sub-batches on NPU and PIM"),
        click.option("--power-cap-w", type=str, default=None, help="per-device power cap, W (lowers the clock)"),
        click.option("--pue", type=str, default=None, help="facility energy over IT energy (default 1)"),
        click.option("--train-tokens", type=str, default=None),
        click.option("--capacity-factor", type=str, default=None,
                     help="MoE expert capacity factor (padded, token-dropping routing); default dropless"),
        *(click.option(f"--offload-{kind}", f"offload_{kind}", default=None,
                       help=f"where the {kind} live: none, cpu, nvme or fractions like gpu=0.2,cpu=0.8")
          for kind in ("weights", "optimizer", "grads", "activations", "kv")),
        click.option("--offload-experts", "offload_experts", default=None,
                     help="MoE: where the routed experts live (an expert cache on the device holds the gpu share; "
                          "missed experts are fetched when the router picks them); default: with the weights"),
        click.option("--expert-hit-rate", type=str, default=None,
                     help="MoE expert offload: share of routed experts found in the device cache (default: its gpu share)"),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table"),
    ]
    for name in _INT_OPTIONS:
        opts.append(click.option("--" + name.replace("_", "-"), name, type=str, default=None))
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _collect(kwargs):
    plan = {}
    whatif = _parse_pairs(kwargs.pop("whatif", ()), "--set")
    place = kwargs.pop("place", ())
    if place:
        plan["place"] = _parse_pairs(place, "--place")
    for key, value in kwargs.items():
        if value is None:
            continue
        if key in _INT_OPTIONS or key in ("gpu_memory_utilization", "power_cap_w", "pue", "train_tokens",
                                                      "capacity_factor", "sub_batches", "expert_hit_rate"):
            value = _scalar(value)
        plan[key] = value
    if whatif:
        plan["hardware"] = {"base": plan["hardware"], **whatif}
    return plan


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="perfsim")
def cli():
    """perfsim: LLM latency, throughput, memory and power on hardware you may not have."""


@cli.command()
@_plan_options
@click.option("--trace-out", default=None, metavar="FILE.json",
              help="train: also simulate the step on a timeline and write it as a Chrome trace (Perfetto)")
def estimate(fmt, trace_out, **kwargs):
    """Estimate one inference request batch or one training step."""
    try:
        result = api.estimate(**_collect(kwargs), trace_out=trace_out)
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(result)
    else:
        click.echo(_table(result))


def _length(text: str, option: str):
    """A length option: ``1024``, ``lognormal:mean=1024,sigma=0.5,max=4096``, a JSON object, or a CSV path."""
    text = text.strip()
    if text.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"malformed JSON: {exc.msg} at character {exc.pos}", field=option) from None
    head, sep, rest = text.partition(":")
    if sep and head.isidentifier() and not os.path.exists(text):
        spec = {"dist": head}
        spec.update(_parse_pairs([p for p in rest.split(",") if p.strip()], option))
        return spec
    return _scalar(text)


_SERVE_INTS = ("num_devices", "tp", "pp", "dp", "ep", "num_requests", "max_batch", "chunk_size",
               "max_prefill_tokens", "seed")
_SERVE_NUMBERS = ("arrival_rate", "ttft_slo_s", "tpot_slo_s", "gpu_memory_utilization", "power_cap_w", "pue",
                  "power_window_s")


def _serve_options(fn):
    opts = [
        *_system_options(),
        click.option("--dtype", default=None), click.option("--weight-dtype", default=None),
        click.option("--kv-dtype", default=None), click.option("--runtime", default=None, help="engine profile"),
        click.option("--sp/--no-sp", default=None, help="sequence parallelism with TP"),
        click.option("--trace", default=None, help="CSV of arrival_s,prompt_len,gen_len"),
        click.option("--prompt-len", default=None,
                     help="tokens: 1024, lognormal:mean=1024,sigma=0.5,max=4096, a JSON object or a CSV of lengths"),
        click.option("--gen-len", default=None, help="generated tokens, as --prompt-len"),
        click.option("--scheduler", default=None, help="static, continuous (default) or chunked-prefill"),
        click.option("--disaggregate", default=None, metavar="P:D", help="devices for prefill and decode instances"),
        click.option("--trace-out", default=None, help="write a Chrome trace (JSON, opens in Perfetto)"),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table"),
    ]
    helps = {"arrival_rate": "requests/s, Poisson (default: all requests at time 0)",
             "num_requests": "requests to simulate (default 1000, or the trace's rows)",
             "max_batch": "sequences per instance (default 256)",
             "chunk_size": "tokens per chunked-prefill iteration (default 512)",
             "max_prefill_tokens": "prompt tokens per continuous prefill iteration (default 8192)",
             "ttft_slo_s": "time-to-first-token objective, s", "tpot_slo_s": "time-per-output-token objective, s",
             "seed": "random seed of arrivals and lengths (default 0)",
             "power_cap_w": "per-device power cap, W (each iteration's clock is lowered to meet it)",
             "pue": "facility energy over IT energy (default 1)",
             "power_window_s": "window of the cluster power statistics, s (default 1)"}
    for name in (*_SERVE_INTS, *_SERVE_NUMBERS):
        opts.append(click.option("--" + name.replace("_", "-"), name, type=str, default=None, help=helps.get(name)))
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


def _serve_table(r: dict) -> str:
    lines = []
    b = r.get("breakdown") or {}
    feasible = r["feasible"]
    lines.append(f"feasible: {'yes' if feasible else 'NO'}" + ("" if feasible else f"  ({r['reason']})"))
    if not r["completed"]:
        return "\n".join(lines)
    inst = f"{b['instances']} instance{'s' if b['instances'] != 1 else ''} of {b['devices_per_instance']} device(s)"
    if "prefill_instances" in b:
        inst = (f"{b['prefill_instances']} prefill + {b['decode_instances']} decode instances of "
                f"{b['devices_per_instance']} device(s)")
    lines.append(f"requests             {r['completed']:,} completed, {r['dropped']:,} dropped  "
                 f"({b['scheduler']}, {inst})")
    lines.append(f"makespan             {_fmt_s(b['makespan_s'])}")
    opt = b.get("optimal", {})
    lines.append(f"throughput           {_fmt(r['throughput_tokens_per_s'], ',.1f')} generated tokens/s  "
                 f"(optimal {_fmt(r['optimal_throughput_tokens_per_s'], ',.1f')}: {opt.get('bound', '-')}-bound "
                 f"at batch {opt.get('batch', '-')})")
    lines.append(f"requests/s           {_fmt(r['requests_per_s'], ',.2f')}  "
                 f"(goodput {_fmt(r['goodput_requests_per_s'], ',.2f')}, "
                 f"SLO attainment {_fmt(r['slo_attainment'], '.1%')})")
    lines.append("")
    lines.append(f"{'latency':<21}{'mean':>11}{'p50':>11}{'p90':>11}{'p99':>11}")
    for key, label in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("itl_s", "ITL"), ("e2e_latency_s", "end-to-end")):
        stats = r[key]
        lines.append(f"  {label:<19}" + "".join(f"{_fmt_s(stats[q]):>11}" for q in ("mean", "p50", "p90", "p99")))
    lines.append("")
    busy = b["busy_s"]
    lines.append("where the time goes (instance-seconds)")
    for key in ("prefill", "decode", "mixed"):
        lines.append(f"  {key + ' iterations':<20}{_fmt_s(busy[key])}")
    lines.append(f"  {'idle':<20}{_fmt_s(b['idle_s'])}")
    lines.append(f"  {'iterations':<20}{b['iterations']:,}, mean batch {_fmt(b['mean_batch_size'], ',.1f')}, "
                 f"{b['preemptions']:,} preemptions")
    lines.append(f"  {'KV cache':<20}{_fmt(b['kv_utilisation'], '.1%')} used on average of "
                 f"{_fmt(b['kv_cache_capacity_tokens'], ',.0f')} tokens per instance")
    if b.get("kv_transfer"):
        lines.append(f"  {'KV transfers':<20}{b['kv_transfer']['count']:,}, mean {_fmt_s(b['kv_transfer']['mean_s'])}")
    lines.append("")
    lines.append("power and energy")
    lines.append(f"  {'mean power':<20}{_fmt(r['power_w_per_device'], ',.0f')} W per device")
    lines.append(f"  {'server at the wall':<20}{_fmt(r['power_w_per_node'], ',.0f')} W per node")
    lines.append(f"  {'energy':<20}{_fmt_j(r['energy_j'])} accelerators, {_fmt_j(r['energy_wall_j'])} at the wall")
    lines.append(f"  {'energy per token':<20}{_fmt_j(r['energy_j_per_token'])} per generated token")
    cluster = b.get("cluster_power")
    if cluster:
        wall = cluster["wall_w"]
        lines.append(f"  {'cluster at the wall':<20}{_fmt(wall['mean'] / 1e3, ',.1f')} kW mean, p99 "
                     f"{_fmt(wall['p99'] / 1e3, ',.1f')} kW, peak {_fmt(wall['max'] / 1e3, ',.1f')} kW "
                     f"({_fmt(cluster['window_s'], 'g')} s means) of {_fmt(cluster['provisioned_w'] / 1e3, ',.1f')} kW "
                     f"nameplate")
    cap = b.get("power_cap")
    if cap:
        clocks = ", ".join(f"{k} {_fmt(v, '.0%')}" for k, v in cap["clock_ratio"].items() if v is not None)
        lines.append(f"  {'clock under the cap':<20}{clocks} (time-weighted), "
                     f"lowest {_fmt(cap['lowest_clock_ratio'], '.0%')}")
    if b.get("trace"):
        lines.append("")
        lines.append(f"trace: {b['trace']['path']} ({b['trace']['iterations_written']:,} of "
                     f"{b['trace']['iterations_total']:,} iterations)")
    return "\n".join(lines)


@cli.command()
@_serve_options
def serve(fmt, **kwargs):
    """Simulate serving a stream of requests: TTFT, TPOT, throughput, goodput, power."""
    try:
        scenario = {}
        whatif = _parse_pairs(kwargs.pop("whatif", ()), "--set")
        for key, value in kwargs.items():
            if value is None:
                continue
            if key in ("prompt_len", "gen_len"):
                value = _length(value, key)
            elif key in _SERVE_INTS or key in _SERVE_NUMBERS:
                value = _scalar(value)
            scenario[key] = value
        if whatif:
            scenario["hardware"] = {"base": scenario["hardware"], **whatif}
        result = api.serve(**scenario)
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(result)
    else:
        click.echo(_serve_table(result))


@cli.command()
@click.option("--hardware", required=True)
@click.option("--m", "m", type=int, required=True)
@click.option("--n", "n", type=int, required=True)
@click.option("--k", "k", type=int, required=True)
@click.option("--dtype", default="bf16")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def gemm(hardware, m, n, k, dtype, fmt):
    """Time of one GEMM [m x k] . [k x n]."""
    try:
        r = api.gemm(hardware, m, n, k, dtype)
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(r)
    else:
        click.echo(f"{m} x {n} x {k} {dtype} on {hardware}: {_fmt_s(r['time_s'])}, {r['tflops']:.1f} TFLOP/s")


@cli.command()
@click.option("--hardware", required=True)
@click.option("--op", default="all_reduce", help="all_reduce, all_gather, reduce_scatter, all_to_all, send_recv")
@click.option("--size-bytes", type=str, required=True, help="bytes, e.g. 1073741824")
@click.option("--num-devices", type=int, required=True)
@click.option("--algorithm", default="auto")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def collective(hardware, op, size_bytes, num_devices, algorithm, fmt):
    """One collective (nccl-tests algbw/busbw definitions)."""
    try:
        size = _scalar(size_bytes)
        r = api.collective(hardware, op, size, num_devices, algorithm)
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(r)
    else:
        click.echo(f"{op} of {size:,} B on {num_devices} x {hardware}: {_fmt_s(r['time_s'])}, "
                   f"algbw {r['algbw_gb_s']:.1f} GB/s, busbw {r['busbw_gb_s']:.1f} GB/s")


@cli.command()
@click.option("--hardware", required=True)
@click.option("--size-bytes", type=str, required=True)
@click.option("--src", default="hbm")
@click.option("--dst", default="hbm")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def memcpy(hardware, size_bytes, src, dst, fmt):
    """Copy between memory tiers (hbm, cpu, nvme)."""
    try:
        size = _scalar(size_bytes)
        r = api.memcpy(hardware, size, src, dst)
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(r)
    else:
        click.echo(f"{src} -> {dst}, {size:,} B on {hardware}: {_fmt_s(r['time_s'])}, {r['bandwidth_gb_s']:.1f} GB/s")


# --- sweeps (perfsim.explore.files, perfsim.sweep) ---
@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, help="results file: .csv or .parquet")
@click.option("--keep-infeasible", is_flag=True,
              help="keep rows that are infeasible or break a constraint, flagged by a meets_constraints column")
@click.option("--chunk-rows", type=int, default=None, help="rows per chunk (memory per chunk, unit of resume)")
@click.option("--backend", default="local", help="local (default) or dask")
@click.option("--scheduler", default=None, metavar="ADDRESS",
              help="dask scheduler address (default: a local cluster on this machine)")
@click.option("--overwrite", is_flag=True, help="replace --out if it exists")
@click.option("--restart", is_flag=True, help="discard an unfinished run of another spec at --out")
@click.option("--progress/--no-progress", default=None, help="progress line on stderr (default: on a terminal)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def sweep(spec, out_path, keep_infeasible, chunk_rows, backend, scheduler, overwrite, restart, progress, fmt):
    """Evaluate every combination of a sweep spec (YAML: axes, fixed arguments, constraints).

    Chunks are written as they finish; an interrupted run resumes when run again with the same
    spec and --out.
    """
    from perfsim.explore.files import run_sweep_file

    try:
        summary = run_sweep_file(spec, out_path, keep_infeasible=keep_infeasible, chunk_rows=chunk_rows,
                                 backend=backend, scheduler=scheduler, overwrite=overwrite, restart=restart,
                                 progress=progress)
    except InputError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo(f"\nperfsim: interrupted; finished chunks are kept in {out_path}.partial/ - run the same "
                   "command again to resume", err=True)
        sys.exit(130)
    if fmt == "json":
        _echo_json(summary)
    else:
        resumed = f", {summary['resumed_chunks']} of {summary['chunks']} chunks from an earlier run" \
            if summary["resumed_chunks"] else ""
        click.echo(f"{summary['rows']:,} of {summary['total_rows']:,} configurations written "
                   f"({summary['feasible']:,} feasible{resumed}) -> {out_path}")
# --- end of sweeps ---


# --- plots (perfsim.report.plot) ---
@cli.group()
def plot():
    """Draw a plot to an image file (PNG, SVG or PDF by the suffix of --out)."""


def _plot_out(fn):
    return click.option("--out", "out", required=True, help="image file: .png, .svg or .pdf")(fn)


def _draw(make, out):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    kinds = Figure().canvas.get_supported_filetypes()
    suffix = os.path.splitext(out)[1].lower().lstrip(".")
    if suffix not in kinds:
        _fail(f"--out: unknown image format {suffix!r}; use one of: {', '.join(sorted(kinds))}")
    try:
        make()
    except InputError as exc:
        _fail(str(exc))


@plot.command(name="roofline")
@_plan_options
@_plot_out
def plot_roofline(fmt, out, **kwargs):
    """The hardware's roofline with the plan's ops (one layer, prefill and decode) placed on it."""
    from perfsim.report import plot as plots

    def make():
        plan = _collect(kwargs)
        return plots.roofline(plan.pop("hardware"), dtype=plan.pop("dtype", "bf16"), out=out, **plan)

    _draw(make, out)


@plot.command(name="memory")
@_plan_options
@_plot_out
def plot_memory(fmt, out, **kwargs):
    """Memory per device of a plan, stacked by kind, against capacity."""
    from perfsim.report import plot as plots

    _draw(lambda: plots.memory_stack(api.estimate(**_collect(kwargs)), out=out), out)


@plot.command(name="breakdown")
@_plan_options
@_plot_out
def plot_breakdown(fmt, out, **kwargs):
    """Where the time of a plan's training step or request goes."""
    from perfsim.report import plot as plots

    _draw(lambda: plots.time_breakdown(api.estimate(**_collect(kwargs)), out=out), out)


@plot.command(name="pareto")
@click.argument("results", type=click.Path(dir_okay=False))
@click.option("--x", "x", required=True, help="column, optionally min:/max: (default min)")
@click.option("--y", "y", required=True, help="column, optionally min:/max: (default max)")
@click.option("--color", default=None, help="column to colour the points by")
@click.option("--constraint", "constraints", multiple=True, help="expression over columns (repeatable)")
@_plot_out
def plot_pareto(results, x, y, color, constraints, out):
    """The Pareto front of a sweep's results file (.parquet or .csv)."""
    import pandas as pd

    from perfsim.report import plot as plots

    def make():
        suffix = os.path.splitext(results)[1].lower()
        if suffix not in (".parquet", ".csv"):
            raise InputError(f"expected a .parquet or .csv results file, got {results!r}", field="RESULTS")
        try:
            df = pd.read_parquet(results) if suffix == ".parquet" else pd.read_csv(results)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {results}: {exc}", field="RESULTS") from None
        return plots.pareto(df, x, y, color=color, constraints=list(constraints) or None, out=out)

    _draw(make, out)


@plot.command(name="timeline")
@click.argument("trace", type=click.Path(dir_okay=False))
@click.option("--max-events", type=int, default=5000, help="slices drawn at most (the earliest)")
@_plot_out
def plot_timeline(trace, max_events, out):
    """A pipeline or serving timeline from a Chrome trace (estimate/serve --trace-out)."""
    from perfsim.report import plot as plots

    _draw(lambda: plots.timeline(trace, max_events=max_events, out=out), out)
# --- end of plots ---


@cli.command()
@click.option("--suite", default=None, help="category (training, inference, memory, ...) or id prefix")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def validate(suite, fmt):
    """Predicted vs published for every validation case, with MAPE per category."""
    from perfsim.validate import summary
    from perfsim.validate import validate as run

    try:
        df = run(suite)
    except InputError as exc:
        _fail(str(exc))
    summ = summary(df) if len(df) else df
    if fmt == "json":
        _echo_json({"cases": df.to_dict(orient="records"), "summary": summ.to_dict(orient="records")})
    else:
        for _, row in df.iterrows():
            if np.isfinite(row["predicted"]):
                flag = f"  ({row['status']}: {row['reason']})" if row["status"] != "ok" else ""
                click.echo(f"{row['id']:<48} {row['metric']:<36} {row['published']:>12.4g} {row['predicted']:>12.4g}"
                           f" {row['error']:>+8.1%}{flag}")
            else:
                click.echo(f"{row['id']:<48} {row['metric']:<36} {row['published']:>12.4g} {'-':>12} "
                           f"{row['status']}: {row['reason']}")
        click.echo("")
        click.echo(summ.to_string(index=False, float_format=lambda x: f"{x:.3f}"))
    # only a broken case (an error inside perfsim) fails the command, never the size of an error
    sys.exit(1 if len(df) and (df["status"] == "error").any() else 0)


@cli.command(name="list")
@click.argument("what", type=click.Choice(["models", "hardware", "runtimes"]))
def list_(what):
    """List the shipped models, hardware or runtime profiles."""
    from perfsim.specs.hardware import hardware_names, load_hardware
    from perfsim.specs.model import load_model, model_names
    from perfsim.specs.runtime import load_runtime, runtime_names

    try:
        if what == "models":
            for name in model_names():
                m = load_model(name)
                click.echo(f"{name:<16} {m.published_params / 1e9 if m.published_params else 0:8.1f} B  "
                           f"{m.fields.get('description', '')}")
        elif what == "hardware":
            for name in hardware_names():
                h = load_hardware(name)
                click.echo(f"{name:<14} {h.kind:<4} {h.peak('bf16') if 'bf16' in h.peak_tflops else h.peak('fp16'):8.0f} "
                           f"TFLOP/s 16-bit  {h['hbm_capacity_gib']:6.0f} GiB  {h['hbm_bandwidth_gb_s']:6.0f} GB/s  "
                           f"{h.description}")
        else:
            for name in runtime_names():
                click.echo(f"{name:<12} {load_runtime(name).values['description']}")
    except InputError as exc:
        _fail(str(exc))


def main(argv=None):
    """Entry point of the ``perfsim`` console script."""
    try:
        cli.main(args=argv, prog_name="perfsim", standalone_mode=True)
    except InputError as exc:  # pragma: no cover - commands catch their own
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
