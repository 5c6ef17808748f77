"""perfsim: how fast, how memory-hungry and how power-hungry an LLM runs on hardware you may not have.

>>> import perfsim
>>> r = perfsim.estimate(model="llama2-70b", hardware="a100-80gb", tp=8)
>>> round(r["memory_per_device_gib"]["weights"])
16
"""

from perfsim.api import collective, estimate, gemm, memcpy, serve, sweep, timeline
from perfsim.errors import InputError
from perfsim.validate import validate

__version__ = "0.1.0"


#: names imported on first use, so that ``import perfsim`` (and the CLI's estimate) does not load pandas,
#: scipy or matplotlib: name -> (module, attribute; None for the module itself)
_LAZY = {
    "optimize_serving": ("perfsim.explore.optimize", "optimize_serving"),
    "optimize_training": ("perfsim.explore.optimize", "optimize_training"),
    "training_space": ("perfsim.explore.optimize", "training_space"),
    "oversubscribe": ("perfsim.explore.oversubscription", "oversubscription"),
    "best": ("perfsim.explore.pareto", "best"),
    "pareto": ("perfsim.explore.pareto", "pareto"),
    "plot": ("perfsim.report.plot", None),
}


def __getattr__(name: str):
    """The design-space search (``optimize_*``, ``pareto``, ``best``, ``oversubscribe``) and
    ``perfsim.plot`` (:mod:`perfsim.report.plot`), imported on first use."""
    if name not in _LAZY:
        raise AttributeError(f"module 'perfsim' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    return value if attribute is None else getattr(value, attribute)

__all__ = ["InputError", "best", "collective", "estimate", "gemm", "memcpy", "optimize_serving", "optimize_training",
           "oversubscribe", "pareto", "serve", "sweep", "timeline", "validate"]
