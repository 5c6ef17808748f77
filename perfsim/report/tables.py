"""The command line's text: an estimate, a serving run, a kernel, a sweep's summary and the
validation cases as tables or lines, and any result as JSON.

Pure functions: a result (dict, or a DataFrame for the validation cases) in, text out.
"""

from __future__ import annotations

import json
import math

import numpy as np


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


def json_text(data) -> str:
    """``data`` as indented JSON: numpy numbers as numbers, NaN as null (in mappings)."""
    return json.dumps(_clean(data), indent=2, default=_json_default)


def _fmt_s(x):
    """A duration in the unit that reads best (s, ms, us; the sign kept, never a negative zero)."""
    if x is None:
        return "-"
    size = abs(x)
    if size < 5e-8:  # below the last digit shown: 0, not -0.0
        return "0 us"
    if size >= 1:
        return f"{x:.3f} s"
    if size >= 1e-3:
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


def plan_line(plan: dict) -> str:
    """The plan as run, in one line: the parallel layout, the engine and the choices it made."""
    layout = " ".join(f"{k} {plan[k]}" for k in ("tp", "pp", "dp", "cp", "ep") if plan.get(k, 1) != 1) or "1 device"
    parts = [f"plan: {plan['model'] if isinstance(plan['model'], str) else 'custom model'}",
             f"{plan['dtype']}", layout, f"runtime {plan['runtime']}"]
    if plan["mode"] == "train":
        parts += [f"zero {plan['zero']}", f"recompute {plan['recompute']}",
                  f"micro-batch {plan['micro_batch']} of {plan['global_batch']} x {plan['seq_len']} tokens"]
        if plan["pp"] > 1:
            parts.append("layers per stage " + ",".join(map(str, plan["pp_layers"] or [])))
    else:
        parts.append(f"batch {plan['batch']} x ({plan['prompt_len']} + {plan['gen_len']}) tokens")
    return ", ".join(parts)


def estimate_table(result: dict) -> str:
    """The table of one estimate (``perfsim estimate``): training step or inference request batch."""
    lines = []
    feasible = result["feasible"]
    lines.append(f"feasible: {'yes' if feasible else 'NO'}" + ("" if feasible else f"  ({result['reason']})"))
    if "plan" in result:
        lines.append(plan_line(result["plan"]))
    if not feasible:
        lines.append("(the plan cannot run: the numbers below are for reference only)")
    if result.get("mode") == "train":
        lines.append(f"step time            {_fmt_s(result['step_time_s'])}")
        lines.append(f"tokens/s (job)       {_fmt(result['tokens_per_s'], ',.0f')}")
        lines.append(f"MFU / HFU            {_fmt(result['mfu'], '.1%')} / {_fmt(result['hfu'], '.1%')}")
        lines.append(f"TFLOP/s per device   {_fmt(result['model_tflops_per_device'], '.1f')} model, "
                     f"{_fmt(result['hardware_tflops_per_device'], '.1f')} hardware")
        lines.append(f"bubble fraction      {_fmt(result['bubble_fraction'], '.1%')}")
        lines.append("")
        lines.append("where the step goes (the step is forward + backward + recompute + bubble + pipeline p2p"
                     " + dp exposed + cp exposed + optimizer + offload + overhead + throttle, the time a clock lowered"
                     " to the power limit adds; communication lines are"
                     " part of forward/backward or overlapped)")
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
                    *(("host_attention_s", "offload_s") if offloading else ()), "throttle_s", "total_s"):
            lines.append(f"  {key[:-2].replace('_', ' '):<20}{_fmt_s(pre.get(key)):>12}{_fmt_s(dec.get(key)):>14}")
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


def serve_table(r: dict) -> str:
    """The table of one serving run (``perfsim serve``)."""
    lines = []
    b = r.get("breakdown") or {}
    feasible = r["feasible"]
    lines.append(f"feasible: {'yes' if feasible else 'NO'}" + ("" if feasible else f"  ({r['reason']})"))
    if not r["completed"]:
        return "\n".join(lines)
    inst = f"{b['instances']} instance{'s' if b['instances'] != 1 else ''} of {b['devices_per_instance']} device(s)"
    if b.get("sync_ranks", 1) > 1:
        inst += f", expert groups of {b['sync_ranks']} stepping together"
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
                 + (f"SLO attainment {_fmt(r['slo_attainment'], '.1%')})" if r["slo_attainment"] is not None
                    else "no SLO given)"))
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


def gemm_line(r: dict, hardware, m: int, n: int, k: int, dtype: str) -> str:
    """One GEMM's time and rate (``perfsim gemm``)."""
    return f"{m} x {n} x {k} {dtype} on {hardware}: {_fmt_s(r['time_s'])}, {r['tflops']:.1f} TFLOP/s"


def collective_line(r: dict, hardware, op: str, size: int, num_devices: int) -> str:
    """One collective's time and bandwidths (``perfsim collective``)."""
    return (f"{op} of {size:,} B on {num_devices} x {hardware}: {_fmt_s(r['time_s'])}, "
            f"algbw {r['algbw_gb_s']:.1f} GB/s, busbw {r['busbw_gb_s']:.1f} GB/s")


def memcpy_line(r: dict, hardware, size: int, src: str, dst: str) -> str:
    """One copy's time and bandwidth (``perfsim memcpy``)."""
    return f"{src} -> {dst}, {size:,} B on {hardware}: {_fmt_s(r['time_s'])}, {r['bandwidth_gb_s']:.1f} GB/s"


def sweep_line(summary: dict, out_path) -> str:
    """What a sweep wrote (``perfsim sweep``)."""
    resumed = f", {summary['resumed_chunks']} of {summary['chunks']} chunks from an earlier run" \
        if summary["resumed_chunks"] else ""
    return (f"{summary['rows']:,} of {summary['total_rows']:,} configurations written "
            f"({summary['feasible']:,} feasible{resumed}) -> {out_path}")


def _summary_rows(summary) -> list[list[str]]:
    keys = [k for k in ("category", "source") if k in summary.columns]
    rows = [[*keys, "cases", "ran", "infeasible plans", "failed", "MAPE", "within 15 %"]]
    for _, r in summary.iterrows():
        mape = f"{100 * r['mape']:.1f} %" if np.isfinite(r["mape"]) else "-"
        rows.append([*(str(r[k]) for k in keys), str(r["cases"]), str(r["ran"]), str(r["infeasible_plan"]),
                     str(r["failed"]), mape, str(r["within_15pct"])])
    return rows


def _grid(rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        return ["| " + " | ".join(rows[0]) + " |", "|" + " --- |" * len(rows[0]),
                *("| " + " | ".join(r) + " |" for r in rows[1:])]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in rows]


def validation_text(cases, summary, by_source=None, markdown: bool = False) -> str:
    """Predicted against published, a line per case, then MAPE per category and per source
    (``perfsim validate``); ``cases`` and the summaries are the DataFrames of :mod:`perfsim.validate`.
    ``markdown``: the summaries alone, as Markdown tables (for a README)."""
    lines = []
    if not markdown:
        lines.append(f"{'case':<48} {'metric':<36} {'published':>12} {'predicted':>12} {'error':>8}")
        for _, row in cases.iterrows():
            if np.isfinite(row["predicted"]):
                flag = f"  ({row['status']}: {row['reason']})" if row["status"] != "ok" else ""
                lines.append(f"{row['id']:<48} {row['metric']:<36} {row['published']:>12.4g} "
                             f"{row['predicted']:>12.4g} {row['error']:>+8.1%}{flag}")
            else:
                lines.append(f"{row['id']:<48} {row['metric']:<36} {row['published']:>12.4g} {'-':>12} "
                             f"{row['status']}: {row['reason']}")
        lines.append("")
    lines += ["MAPE per category", ""] if not markdown else []
    lines += _grid(_summary_rows(summary), markdown)
    if by_source is not None and len(by_source):
        lines += ["", "MAPE per source", ""] if not markdown else [""]
        lines += _grid(_summary_rows(by_source), markdown)
    return "\n".join(lines)


def model_line(name: str, m) -> str:
    """A shipped model (:class:`perfsim.specs.model.ModelSpec`) in ``perfsim list models``."""
    return (f"{name:<16} {m.published_params / 1e9 if m.published_params else 0:8.1f} B  "
            f"{m.fields.get('description', '')}")


def hardware_line(name: str, h) -> str:
    """A shipped device (:class:`perfsim.specs.hardware.HardwareSpec`) in ``perfsim list hardware``."""
    return (f"{name:<14} {h.kind:<4} {h.peak('bf16') if 'bf16' in h.peak_tflops else h.peak('fp16'):8.0f} "
            f"TFLOP/s 16-bit  {h['hbm_capacity_gib']:6.0f} GiB  {h['hbm_bandwidth_gb_s']:6.0f} GB/s  "
            f"{h.description}")


def runtime_line(name: str, runtime) -> str:
    """A runtime profile (:class:`perfsim.specs.runtime.RuntimeSpec`) in ``perfsim list runtimes``."""
    return f"{name:<12} {runtime.values['description']}"
