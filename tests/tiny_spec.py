"""A minimal hardware spec for tests of the spec checks: every block filled with small numbers,
one top-level source covering them all."""

from perfsim.specs.hardware import parse_hardware
from perfsim.specs.yamlio import loads_yaml


def tiny_spec(*, kind="gpu", compute="bf16: 100", architecture="compute_units: 10", power="tdp_w: 100, idle_w: 20",
              node="devices_per_node: 1", pim=None):
    """Parse the spec; each keyword is the inside of its YAML flow mapping (``pim``: a PIM block)."""
    pim_line = f"  pim: {{{pim}}}\n" if pim is not None else ""
    text = (f"name: x\ndescription: test\nkind: {kind}\nsource: s\ndevice:\n"
            f"  compute: {{peak_tflops: {{{compute}}}}}\n"
            f"  architecture: {{{architecture}}}\n"
            "  memory: {hbm: {capacity_gib: 10, bandwidth_gb_s: 100}}\n"
            "  efficiency: {gemm_max: 0.8, memory_max: 0.8}\n"
            f"  power: {{{power}}}\n{pim_line}"
            f"node: {{{node}}}\n")
    return parse_hardware(loads_yaml(text, "x.yaml"))
