"""Every plot renders to a PNG (Agg), from the API and from `perfsim plot`."""

import matplotlib

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
