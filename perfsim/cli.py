"""The ``perfsim`` command: a thin layer over :mod:`perfsim.api`.

Bad input exits with code 2 and one line naming the field (and file:line), never a traceback.
"""

from __future__ import annotations

import json
import math
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
    if result.get("time_to_train_s") is not None:
        lines.append(f"  {'time to train':<20}{_fmt(result['time_to_train_s'] / 86400.0, ',.2f')} days")
    span = "job" if result.get("time_to_train_s") is not None else (
        "step" if result.get("mode") == "train" else "request batch")
    lines.append(f"  {'energy':<20}{_fmt_j(result['energy_j'])} accelerators, "
                 f"{_fmt_j(result['energy_wall_j'])} at the wall (one {span})")
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


def _plan_options(fn):
    opts = [
        click.option("--model", required=True, help="zoo name (perfsim list models), YAML file or HF config.json"),
        click.option("--hardware", required=True, help="zoo name (perfsim list hardware) or YAML file"),
        click.option("--set", "whatif", multiple=True, metavar="KEY=VALUE",
                     help="what-if override of a hardware number, e.g. --set hbm_bandwidth_gb_s=4800"),
        click.option("--mode", default=None, help="inference (default) or train"),
        click.option("--dtype", default=None, help="bf16 (default), fp16, fp8, fp32, int8, fp4, int4"),
        click.option("--weight-dtype", default=None), click.option("--kv-dtype", default=None),
        click.option("--sp/--no-sp", default=None, help="sequence parallelism with TP"),
        click.option("--schedule", default=None), click.option("--recompute", default=None),
        click.option("--finetune", default=None), click.option("--runtime", default=None, help="engine profile"),
        click.option("--gpu-memory-utilization", type=str, default=None),
        click.option("--power-cap-w", type=str, default=None),
        click.option("--train-tokens", type=str, default=None),
        click.option("--capacity-factor", type=str, default=None,
                     help="MoE expert capacity factor (padded, token-dropping routing); default dropless"),
        *(click.option(f"--offload-{kind}", f"offload_{kind}", default=None,
                       help=f"where the {kind} live: none, cpu, nvme or fractions like gpu=0.2,cpu=0.8")
          for kind in ("weights", "optimizer", "grads", "activations", "kv")),
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
    for key, value in kwargs.items():
        if value is None:
            continue
        if key in _INT_OPTIONS or key in ("gpu_memory_utilization", "power_cap_w", "train_tokens",
                                                      "capacity_factor"):
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
def estimate(fmt, **kwargs):
    """Estimate one inference request batch or one training step."""
    try:
        result = api.estimate(**_collect(kwargs))
    except InputError as exc:
        _fail(str(exc))
    if fmt == "json":
        _echo_json(result)
    else:
        click.echo(_table(result))


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


@cli.command()
@click.argument("spec", type=click.Path(dir_okay=False))
@click.option("--out", "out_path", required=True, help="results file: .csv or .parquet")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def sweep(spec, out_path, fmt):
    """Evaluate every combination of a sweep spec (YAML of estimate arguments, lists as axes)."""
    from perfsim.sweepio import run_sweep_file

    try:
        df = run_sweep_file(spec, out_path)
    except InputError as exc:
        _fail(str(exc))
    summary = {"rows": len(df), "feasible": int(df["feasible"].sum()), "out": out_path}
    if fmt == "json":
        _echo_json(summary)
    else:
        click.echo(f"{summary['rows']:,} configurations ({summary['feasible']:,} feasible) -> {out_path}")


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
