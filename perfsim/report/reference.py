"""``docs/reference.md``, written from the code: the plan's arguments (from
:data:`perfsim.plan.arguments.ARGUMENT_TABLE`) and the keys of an estimate's result.

Run ``python -m perfsim.report.reference > docs/reference.md``; a test checks the file is current.
"""

from __future__ import annotations

from perfsim.plan.arguments import ARGUMENT_TABLE, DERIVED_DEFAULTS, MODE_ONLY

_KINDS = {"int": "whole number >= 1", "pos": "number > 0", "frac": "fraction in (0, 1]", "share": "share in [0, 1]",
          "pue": "number >= 1", "bool": "true or false", "dtype": "dtype name", "offload": "none, a tier or fractions",
          "runtime": "runtime name or what-if dict", "model": "model name, file or dict",
          "hardware": "hardware name, file or what-if dict", "place": "mapping op group -> device",
          "layers": "list of layer counts"}


def _keys(args: dict) -> list[str]:
    """The result keys of one evaluation (nested keys written with dots, as a sweep's columns)."""
    from perfsim.analytical.evaluate import evaluate

    _, out = evaluate(args)
    return [k for k in out if not k.startswith("plan.")] + ["plan", "mode"]


def reference() -> str:
    """The Markdown of ``docs/reference.md``."""
    lines = ["# perfsim reference", "",
             "Written by `python -m perfsim.report.reference` from the argument table "
             "(`perfsim/plan/arguments.py`) and from estimates of Llama-2-7B on one A100-80GB; "
             "a test keeps it current.", "",
             "## Arguments of `estimate`, `sweep` (any may be a list) and `serve` (the plan part)", "",
             "| argument | values | default | unit | mode | meaning |", "| --- | --- | --- | --- | --- | --- |"]
    for a in ARGUMENT_TABLE:
        values = " \\| ".join(map(str, a.kind)) if isinstance(a.kind, tuple) else _KINDS.get(a.kind, str(a.kind))
        default = a.default if a.default is not None else DERIVED_DEFAULTS.get(a.name, "required")
        mode = MODE_ONLY.get(a.name, ("both",))[0]
        lines.append(f"| `{a.name}` | {values} | {default} | {a.unit} | {mode} | {a.meaning} |")
    for mode, extra in (("inference", {}), ("train", {"mode": "train"})):
        keys = _keys({"model": "llama2-7b", "hardware": "a100-80gb", **extra})
        lines += ["", f"## Result keys of a {mode} estimate (SI units; dots are nesting; `plan` echoes every "
                      "argument as resolved)", ""]
        lines += [f"- `{k}`" for k in keys]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
