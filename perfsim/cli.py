"""The ``perfsim`` command: a thin layer over :mod:`perfsim.api`.

Bad input exits with code 2 and one line naming the field (and file:line), never a traceback.
"""

from __future__ import annotations

import json
import os
import sys

import click

from perfsim import api
from perfsim.errors import InputError
from perfsim.report import tables
from perfsim.specs.paths import check_regular_file
from perfsim.specs.yamlio import loads_yaml

_INT_OPTIONS = ("num_devices", "tp", "pp", "dp", "cp", "ep", "zero", "zero_shard_size", "virtual_stages",
                "seq_len", "global_batch", "micro_batch", "batch", "prompt_len", "gen_len", "lora_rank")


def _fail(message: str):
    click.echo(f"perfsim: error: {message}", err=True)
    sys.exit(2)


def _checked(compute):
    """``compute()``; bad input (an :class:`InputError`) exits with code 2 and its one line."""
    try:
        return compute()
    except InputError as exc:
        _fail(str(exc))


#: exit status of a plan that cannot run: the answer is printed, but a script must not mistake it for a result
EXIT_INFEASIBLE = 3


def _show(fmt: str, result, text):
    """Print ``result`` as JSON (``--format json``) or as the table ``text(result)``; a result whose
    plan cannot run (``feasible: false``) exits with :data:`EXIT_INFEASIBLE` after printing."""
    click.echo(tables.json_text(result) if fmt == "json" else text(result))
    if isinstance(result, dict) and result.get("feasible") is False:
        sys.exit(EXIT_INFEASIBLE)


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


def _system_options():
    """Options naming the model and the hardware (with what-if overrides), shared by commands."""
    return [
        click.option("--model", required=True, help="zoo name (perfsim list models), YAML file or HF config.json"),
        click.option("--hardware", required=True, help="zoo name (perfsim list hardware) or YAML file"),
        click.option("--set", "whatif", multiple=True, metavar="KEY=VALUE", show_default="the spec's numbers",
                     help="what-if override of a hardware number, e.g. --set hbm_bandwidth_gb_s=4800"),
    ]


def _plan_options(fn):
    opts = [
        *_system_options(),
        click.option("--mode", default=None, help="inference (default) or train"),
        click.option("--dtype", default=None, help="bf16 (default), fp16, fp8, fp32, int8, fp4, int4"),
        click.option("--weight-dtype", default=None), click.option("--kv-dtype", default=None),
        click.option("--sp/--no-sp", default=None, help="sequence parallelism with TP"),
        click.option("--schedule", default=None),
        click.option("--recompute", default=None,
                     help="none, selective, full, or auto (default: the least that fits the device)"),
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
        click.option("--pp-layers", "pp_layers", default=None, metavar="N,N,...",
                     help="layers of each pipeline stage, e.g. 7,8,8,7 (default: a balanced split)"),
        click.option("--wall-energy", "wall_energy", type=click.Choice(["devices", "node"]), default=None,
                     help="energy at the wall: the devices' share of their servers (default) or whole servers"),
        click.option("--attention-sharding", "attention_sharding", type=click.Choice(["heads", "batch"]), default=None,
                     help="inference: decode attention and KV cache split over the TP ranks by heads (default) "
                          "or by sequences (Pope et al. 2022, Sec. 3.3)"),
        click.option("--weight-layout", "weight_layout", type=click.Choice(["1d", "2d"]), default=None,
                     help="inference: weights split over the TP ranks along one dimension (default) or 2D "
                          "weight-stationary (Pope et al. 2022, Sec. 3.2)"),
        click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table"),
    ]
    for name in _INT_OPTIONS:
        opts.append(click.option("--" + name.replace("_", "-"), name, type=str, default=None))
    for opt in reversed(opts):
        fn = opt(fn)
    _describe(fn.__click_params__)
    return fn


_METAVARS = {"int": "INT", "pos": "NUMBER", "frac": "FRACTION", "share": "SHARE", "pue": "NUMBER", "dtype": "DTYPE",
             "offload": "TIER|FRACTIONS", "runtime": "NAME"}


def _describe(params):
    """Help, value type and default of every plan option, from the argument table
    (:data:`perfsim.plan.arguments.ARGUMENT_TABLE`): what ``--help`` shows."""
    from perfsim.plan.arguments import ARGUMENT_TABLE, DERIVED_DEFAULTS

    table = {a.name: a for a in ARGUMENT_TABLE}
    for param in params:
        arg = table.get(param.name)
        if arg is None or not isinstance(param, click.Option):
            continue
        unit = f" [{arg.unit}]" if arg.unit and arg.unit not in ("layers",) else ""
        param.help = param.help or (arg.meaning + unit)
        default = arg.default if arg.default is not None else DERIVED_DEFAULTS.get(arg.name)
        if param.is_flag and arg.default is None and default is not None:
            param.show_default = str(default)
        elif param.is_flag:
            param.show_default = f"--{'' if default else 'no-'}{param.name}"
        elif default is not None:
            param.show_default = str(default)
        if isinstance(arg.kind, tuple) and param.metavar is None:
            param.metavar = "[" + "|".join(map(str, arg.kind)) + "]"
        elif param.metavar is None and arg.kind in _METAVARS:
            param.metavar = _METAVARS[arg.kind]


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
        elif key == "pp_layers":
            value = [_scalar(v) for v in value.split(",")]
        plan[key] = value
    if whatif:
        plan["hardware"] = {"base": plan["hardware"], **whatif}
    return plan


@click.group(context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="perfsim")
def cli():
    """perfsim: LLM latency, throughput, memory and power on hardware you may not have."""


@cli.command()
@_plan_options
@click.option("--trace-out", default=None, metavar="FILE.json", show_default="none",
              help="train: also simulate the step on a timeline and write it as a Chrome trace (Perfetto)")
def estimate(fmt, trace_out, **kwargs):
    """Estimate one inference request batch or one training step."""
    _show(fmt, _checked(lambda: api.estimate(**_collect(kwargs), trace_out=trace_out)), tables.estimate_table)


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


_SERVE_INTS = ("num_devices", "tp", "pp", "dp", "ep", "num_requests", "max_batch", "max_batched_tokens",
               "chunk_size", "max_prefill_tokens", "seed", "max_requests")
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
             "max_batch": "sequences per instance (default: the engine's max_num_seqs, else 256)",
             "max_batched_tokens": "tokens per iteration (default: the engine's max_num_batched_tokens)",
             "chunk_size": "tokens per chunked-prefill iteration (default: max_batched_tokens, else 512)",
             "max_prefill_tokens": "prompt tokens per continuous prefill iteration (default: max_batched_tokens, "
                                   "else 8192)",
             "ttft_slo_s": "time-to-first-token objective, s", "tpot_slo_s": "time-per-output-token objective, s",
             "seed": "random seed of arrivals and lengths (default 0)",
             "max_requests": "refuse more requests, or trace rows, than this (default 1,000,000)",
             "power_cap_w": "per-device power cap, W (each iteration's clock is lowered to meet it)",
             "pue": "facility energy over IT energy (default 1)",
             "power_window_s": "window of the cluster power statistics, s (default 1)"}
    for name in (*_SERVE_INTS, *_SERVE_NUMBERS):
        opts.append(click.option("--" + name.replace("_", "-"), name, type=str, default=None, help=helps.get(name)))
    for opt in reversed(opts):
        fn = opt(fn)
    return fn


@cli.command()
@_serve_options
def serve(fmt, **kwargs):
    """Simulate serving a stream of requests: TTFT, TPOT, throughput, goodput, power."""

    def run():
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
        return api.serve(**scenario)

    _show(fmt, _checked(run), tables.serve_table)


@cli.command()
@click.option("--hardware", required=True)
@click.option("--m", "m", type=int, required=True)
@click.option("--n", "n", type=int, required=True)
@click.option("--k", "k", type=int, required=True)
@click.option("--dtype", default="bf16")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def gemm(hardware, m, n, k, dtype, fmt):
    """Time of one GEMM [m x k] . [k x n]."""
    _show(fmt, _checked(lambda: api.gemm(hardware, m, n, k, dtype)),
          lambda r: tables.gemm_line(r, hardware, m, n, k, dtype))


@cli.command()
@click.option("--hardware", required=True)
@click.option("--op", default="all_reduce", help="all_reduce, all_gather, reduce_scatter, all_to_all, send_recv")
@click.option("--size-bytes", type=str, required=True, help="bytes, e.g. 1073741824")
@click.option("--num-devices", type=int, required=True)
@click.option("--algorithm", default="auto")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def collective(hardware, op, size_bytes, num_devices, algorithm, fmt):
    """One collective (nccl-tests algbw/busbw definitions)."""
    size = _scalar(size_bytes)
    _show(fmt, _checked(lambda: api.collective(hardware, op, size, num_devices, algorithm)),
          lambda r: tables.collective_line(r, hardware, op, size, num_devices))


@cli.command()
@click.option("--hardware", required=True)
@click.option("--size-bytes", type=str, required=True)
@click.option("--src", default="hbm")
@click.option("--dst", default="hbm")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def memcpy(hardware, size_bytes, src, dst, fmt):
    """Copy between memory tiers (hbm, cpu, nvme)."""
    size = _scalar(size_bytes)
    _show(fmt, _checked(lambda: api.memcpy(hardware, size, src, dst)),
          lambda r: tables.memcpy_line(r, hardware, size, src, dst))


# --- sweeps (perfsim.explore.files, perfsim.sweep) ---
@cli.command()
@click.argument("spec")
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
@click.option("--max-rows", type=str, default=None, help="refuse a sweep of more rows (default 50,000,000)")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
def sweep(spec, out_path, keep_infeasible, chunk_rows, backend, scheduler, overwrite, restart, progress, max_rows,
          fmt):
    """Evaluate every combination of a sweep spec (YAML: axes, fixed arguments, constraints).

    Chunks are written as they finish; an interrupted run resumes when run again with the same
    spec and --out.
    """
    from perfsim.explore.files import run_sweep_file

    try:
        summary = run_sweep_file(spec, out_path, keep_infeasible=keep_infeasible, chunk_rows=chunk_rows,
                                 backend=backend, scheduler=scheduler, overwrite=overwrite, restart=restart,
                                 progress=progress, max_rows=None if max_rows is None else _scalar(max_rows))
    except InputError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        click.echo(f"\nperfsim: interrupted; finished chunks are kept in {out_path}.partial/ - run the same "
                   "command again to resume", err=True)
        sys.exit(130)
    _show(fmt, summary, lambda s: tables.sweep_line(s, out_path))
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
    _checked(make)
    click.echo(f"wrote {out}")


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
@click.argument("results")
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
        check_regular_file(results, "RESULTS")
        try:
            df = pd.read_parquet(results) if suffix == ".parquet" else pd.read_csv(results)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot read {results}: {exc}", field="RESULTS") from None
        return plots.pareto(df, x, y, color=color, constraints=list(constraints) or None, out=out)

    _draw(make, out)


@plot.command(name="timeline")
@click.argument("trace")
@click.option("--max-events", type=int, default=5000,
              help="slices drawn one bar each at most; a longer trace is drawn whole, aggregated in time bins")
@_plot_out
def plot_timeline(trace, max_events, out):
    """A pipeline or serving timeline from a Chrome trace (estimate/serve --trace-out)."""
    from perfsim.report import plot as plots

    _draw(lambda: plots.timeline(trace, max_events=max_events, out=out), out)
# --- end of plots ---


@cli.command()
@click.option("--suite", default=None, help="category (training, inference, memory, ...) or id prefix")
@click.option("--category", default=None, help="only this category (training, inference, memory, power, ...)")
@click.option("--source", default=None, help="only cases whose id starts so (T-MEG21, P-MLE3, ...)")
@click.option("--format", "fmt", type=click.Choice(["table", "json", "markdown"]), default="table",
              help="table: every case and the summaries; markdown: the summaries as Markdown tables")
def validate(suite, category, source, fmt):
    """Predicted vs published for every validation case, with MAPE per category and per source."""
    from perfsim.validate import summary
    from perfsim.validate import validate as run

    df = _checked(lambda: run(suite, category=category, source=source))
    summ = summary(df) if len(df) else df
    by_source = summary(df, by=("category", "source")) if len(df) else df
    text = lambda _: tables.validation_text(df, summ, by_source, markdown=fmt == "markdown")  # noqa: E731
    _show("json" if fmt == "json" else "table",
          {"cases": df.to_dict(orient="records"), "summary": summ.to_dict(orient="records"),
           "by_source": by_source.to_dict(orient="records")}, text)
    # only a broken case (an error inside perfsim) fails the command, never the size of an error
    sys.exit(1 if len(df) and (df["status"] == "error").any() else 0)


@cli.command(name="list")
@click.argument("what", type=click.Choice(["models", "hardware", "runtimes"]))
def list_(what):
    """List the shipped models, hardware or runtime profiles."""
    from perfsim.specs.hardware import hardware_names, load_hardware
    from perfsim.specs.model import load_model, model_names
    from perfsim.specs.runtime import load_runtime, runtime_names

    names, load, line = {"models": (model_names, load_model, tables.model_line),
                         "hardware": (hardware_names, load_hardware, tables.hardware_line),
                         "runtimes": (runtime_names, load_runtime, tables.runtime_line)}[what]

    def echo_all():
        for name in names():
            click.echo(line(name, load(name)))

    _checked(echo_all)


def main(argv=None):
    """Entry point of the ``perfsim`` console script."""
    try:
        cli.main(args=argv, prog_name="perfsim", standalone_mode=True)
    except InputError as exc:  # pragma: no cover - commands catch their own
        _fail(str(exc))


if __name__ == "__main__":  # pragma: no cover
    main()
