"""perfsim: how fast, how memory-hungry and how power-hungry an LLM runs on hardware you may not have.

>>> import perfsim
>>> r = perfsim.estimate(model="llama2-70b", hardware="a100-80gb", tp=8)
>>> round(r["memory_per_device_gib"]["weights"])
16
"""

from perfsim.api import collective, estimate, gemm, memcpy, serve, sweep, timeline
from perfsim.errors import InputError
from perfsim.explore.optimize import optimize_serving, optimize_training  # design-space search
from perfsim.explore.oversubscription import oversubscription as oversubscribe
from perfsim.explore.pareto import best, pareto  # design-space search
from perfsim.validate import validate

__version__ = "0.1.0"


def __getattr__(name: str):
    """``perfsim.plot``: the plotting functions (:mod:`perfsim.report.plot`), imported with matplotlib on
    first use."""
    if name == "plot":
        from perfsim.report import plot

        return plot
    raise AttributeError(f"module 'perfsim' has no attribute {name!r}")

__all__ = ["InputError", "best", "collective", "estimate", "gemm", "memcpy", "optimize_serving", "optimize_training",
           "oversubscribe", "pareto", "serve", "sweep", "timeline", "validate"]
