"""Every plot renders to a PNG (Agg), from the API and from `perfsim plot`."""

import json

import matplotlib
import numpy as np

matplotlib.use("Agg")

import pytest
from click.testing import CliRunner

import perfsim
import perfsim.report.plot as plots
from perfsim.cli import cli
from perfsim.errors import InputError
from perfsim.report.plot.ops import op_points

PNG = b"\x89PNG\r\n\x1a\n"


def _png(path):
    data = path.read_bytes()
    assert data[:8] == PNG and len(data) > 5000
    return data


def test_roofline_places_the_ops(tmp_path):
    ops = op_points(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8)
    gemms = ops[ops.kind == "gemm"]
    # attained rates stay under the roofline: min(peak, bandwidth x intensity)
    assert (gemms.tflops <= 989.5 * 1.0001).all()
    assert (gemms.tflops * 1e12 <= 3350e9 * gemms.intensity * 1.0001).all()
    fig = plots.roofline("h100-sxm", model="llama2-70b", tp=8, batch=8, out=tmp_path / "r.png")
    _png(tmp_path / "r.png")
    assert len(fig.axes[0].collections) == 2  # prefill and decode points
    plots.roofline({"base": "h100-sxm", "hbm_bandwidth_gb_s": 4800}, ops=[{"flops": 1e12, "bytes": 1e9}],
                   out=tmp_path / "w.png")
    _png(tmp_path / "w.png")


def test_memory_and_breakdown(tmp_path):
    train = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, pp=2, global_batch=16)
    infer = perfsim.estimate(model="llama2-70b", hardware="h100-sxm", tp=8, batch=8)
    plots.memory_stack({"train": train, "inference": infer}, out=tmp_path / "m.png")
    plots.time_breakdown(train, out=tmp_path / "t.png")
    plots.time_breakdown(infer, out=tmp_path / "i.png")
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", tp=[1, 2], batch=[1, 8])
    plots.memory_stack(df, out=tmp_path / "s.png")
    for name in ("m", "t", "i", "s"):
        _png(tmp_path / f"{name}.png")


def test_pareto_and_timelines(tmp_path):
    df = perfsim.sweep(model="llama2-70b", hardware="h100-sxm", tp=[2, 4, 8], batch=[1, 4, 16, 64, 256])
    plots.pareto(df, "tpot_s", "throughput_tokens_per_s", color="tp", out=tmp_path / "p.png")
    step = perfsim.timeline(model="llama2-7b", hardware="a100-80gb", tp=2, pp=4, global_batch=16,
                            schedule="interleaved", virtual_stages=2, trace_out=tmp_path / "step.json")
    plots.timeline(step, out=tmp_path / "tl.png")
    perfsim.serve(model="llama2-7b", hardware="a100-80gb", dp=2, num_requests=40, arrival_rate=5,
                  trace_out=tmp_path / "serve.json")
    plots.timeline(tmp_path / "serve.json", out=tmp_path / "sv.png")
    for name in ("p", "tl", "sv"):
        _png(tmp_path / f"{name}.png")
    with pytest.raises(InputError, match="trace"):
        plots.timeline({"traceEvents": []})


def test_cli_plot(tmp_path):
    runner = CliRunner()
    df = perfsim.sweep(model="llama2-7b", hardware="a100-80gb", tp=[1, 2], batch=[1, 8, 64])
    df.to_parquet(tmp_path / "r.parquet")
    perfsim.timeline(model="llama2-7b", hardware="a100-80gb", tp=2, pp=2, global_batch=8, trace_out=tmp_path / "s.json")
    commands = {
        "roofline": ["--model", "llama2-7b", "--hardware", "a100-80gb", "--batch", "4"],
        "memory": ["--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train", "--tp", "2"],
        "breakdown": ["--model", "llama2-7b", "--hardware", "a100-80gb", "--mode", "train", "--tp", "2"],
        "pareto": [str(tmp_path / "r.parquet"), "--x", "tpot_s", "--y", "max:throughput_tokens_per_s"],
        "timeline": [str(tmp_path / "s.json")],
    }
    for kind, args in commands.items():
        r = runner.invoke(cli, ["plot", kind, *args, "--out", str(tmp_path / f"{kind}.png")])
        assert r.exit_code == 0, (kind, r.output)
        _png(tmp_path / f"{kind}.png")
    r = runner.invoke(cli, ["plot", "pareto", str(tmp_path / "r.parquet"), "--x", "tpt_s", "--y", "tokens",
                            "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 2 and "did you mean 'tpot_s'" in r.output and "Traceback" not in r.output


def test_a_training_breakdown_stacks_parts_that_sum_to_the_step():
    r = perfsim.estimate(model="llama2-7b", hardware="a100-80gb", mode="train", tp=2, pp=2, dp=2, global_batch=16)
    fig = plots.time_breakdown(r)
    widths = sum(patch.get_width() for patch in fig.axes[0].patches)
    assert widths == pytest.approx(r["step_time_s"], rel=1e-9)


def test_plot_says_which_file_it_wrote(tmp_path):
    out = tmp_path / "roofline.png"
    result = CliRunner().invoke(cli, ["plot", "roofline", "--model", "llama2-7b", "--hardware", "a100-80gb",
                                      "--out", str(out)])
    assert result.exit_code == 0 and f"wrote {out}" in result.output and out.is_file()


def _drawn_span(fig):
    """Leftmost and rightmost x of the bars a figure draws (in its axis unit)."""
    bars = [p for p in fig.axes[0].patches if p.get_width() > 0]
    return min(p.get_x() for p in bars), max(p.get_x() + p.get_width() for p in bars), bars


def _long_trace(n=20_000, span_s=256.0):
    """A serving-like trace of ``n`` back-to-back iterations on two instances over ``span_s``."""
    dur = span_s * 1e6 / (n // 2)
    events = [{"ph": "M", "name": "process_name", "pid": p, "args": {"name": f"instance {p}"}} for p in (0, 1)]
    events += [{"ph": "X", "pid": i % 2, "tid": 0, "ts": (i // 2) * dur, "dur": dur * 0.9, "cat": "iteration",
                "name": "decode" if i % 7 else "prefill"} for i in range(n)]
    return {"traceEvents": events}, span_s


def test_long_timeline_is_aggregated_over_the_whole_run_not_cut():
    trace, span = _long_trace()
    fig = plots.timeline(trace, max_events=5000)
    left, right, bars = _drawn_span(fig)
    end = max(e["ts"] + e["dur"] for e in trace["traceEvents"] if e["ph"] == "X") / 1e6
    assert end > span * 0.999
    assert left == pytest.approx(0.0, abs=1e-9)
    assert right == pytest.approx(end, rel=1e-9)  # seconds: the last slice's end, not the 5,000th's
    assert fig.axes[0].get_xlim()[1] == pytest.approx(end, rel=1e-9)
    assert "aggregated" in fig.axes[0].get_title() and fig.axes[0].get_xlabel() == "time (s)"
    assert len(bars) <= 5000
    # the bars' heights are the busy share: 90 % of each bin, on both instances
    heights = np.array([p.get_height() for p in bars])
    assert np.allclose(heights, 0.8 * 0.9, rtol=0.02)


def test_short_timeline_draws_every_slice():
    trace, span = _long_trace(n=400, span_s=2.0)
    fig = plots.timeline(trace, max_events=5000)
    _, right, bars = _drawn_span(fig)
    assert len(bars) == 400 and "aggregated" not in fig.axes[0].get_title()
    assert right == pytest.approx(span * 1e3 - 0.1 * span * 1e3 / 200, rel=1e-6)  # ms; the last slice is 90 % busy


def test_serve_trace_timeline_covers_the_whole_run(tmp_path):
    path = tmp_path / "serve.json"
    perfsim.serve(model="llama2-7b", hardware="a100-80gb", num_requests=60, arrival_rate=4, seed=1, trace_out=path)
    slices = [e for e in json.loads(path.read_text())["traceEvents"] if e.get("ph") == "X"]
    end = max(e["ts"] + e["dur"] for e in slices)
    fig = plots.timeline(path, max_events=len(slices) // 4)
    _, right, _ = _drawn_span(fig)
    unit = 1e6 if fig.axes[0].get_xlabel() == "time (s)" else 1e3
    assert right * unit == pytest.approx(end, rel=1e-6)


@pytest.mark.parametrize("plan", [
    {"hardware": "a100-80gb", "model": "llama2-7b", "batch": 4},
    {"hardware": "h100-sxm", "model": "mixtral-8x7b", "batch": 64, "tp": 4},
    {"hardware": "a100-80gb", "model": "llama2-7b", "mode": "train", "tp": 2},
])
def test_roofline_op_labels_do_not_overlap(plan):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    from perfsim.report.plot.labels import GID

    fig = plots.roofline(**plan)
    FigureCanvasAgg(fig).draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    labels = [t for t in ax.texts if t.get_gid() == GID]
    ops = op_points(**plan)
    named = {name for t in labels for name in t.get_text().replace("\n", ", ").split(", ")}
    assert {o.split(" (")[0] for o in named} >= set(ops["op"][(ops["flops"] > 0) & (ops["bytes"] > 0)])
    boxes = [Text.get_window_extent(t, renderer) for t in labels]  # the text, not its leader line
    for i, a in enumerate(boxes):
        assert ax.get_window_extent(renderer).contains(a.x0 + 1, a.y0 + 1)
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), (labels[i].get_text(), labels[boxes.index(b)].get_text())
    legend = ax.get_legend().get_window_extent(renderer)
    assert not any(box.overlaps(legend) for box in boxes)
