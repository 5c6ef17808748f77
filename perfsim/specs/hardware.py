"""Hardware specs: load, check, and override (what-if) device + node + network descriptions.

Schema: ``hardware_specs/SCHEMA.md``. A spec becomes a flat mapping of numbers whose keys carry
units (``hbm_bandwidth_gb_s``); the cost models read those as arrays over configurations.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from perfsim.errors import InputError, check_positive, unknown
from perfsim.specs import same_as
from perfsim.specs import schema as S
from perfsim.specs.dtypes import COMPUTE_DTYPES
from perfsim.specs.paths import read_once, zoo
from perfsim.specs.yamlio import LineDict, load_yaml

_SCHEMA = {
    "name": S.STR,
    "description": S.STR,
    "kind": S.STR,
    "device": {
        "compute": {"peak_tflops": S.NumMap(COMPUTE_DTYPES), "vector_tflops": S.NumMap(COMPUTE_DTYPES)},
        "architecture": {"family": S.STR, "compute_units": S.INT, "clock_ghz": S.NUM, "min_clock_ghz": S.NUM,
                         "l2_cache_mib": S.NUM, "sram_per_unit_kib": S.NUM},
        "gemm_tile": {"m": S.INT, "n": S.INT, "min_reuse": S.NUM},
        "memory": {"hbm": {"capacity_gib": S.NUM, "bandwidth_gb_s": S.NUM, "name": S.STR}},
        "kernel_launch_us": {"value": S.NUM},
        "efficiency": {"gemm_max": S.NUM, "memory_max": S.NUM, "attention_max": S.NUM,
                       "gemm_stream_latency_us": S.NUM,
                       **{f"gemm_max_{d}": S.NUM for d in COMPUTE_DTYPES},
                       **{f"attention_max_{d}": S.NUM for d in COMPUTE_DTYPES}},
        "power": {"tdp_w": S.NUM, "idle_w": S.NUM, "active_w": S.NUM, "matrix_w": S.NUM,
                  "memory_pj_per_byte": S.NUM, "link_pj_per_byte": S.NUM, "vector_w": S.NUM,
                  "voltage_floor": S.NUM, "gemm_clock_ghz": S.NUM, "host_gap_w": S.NUM},
        "engines": {"matrix": {"arrays": S.INT, "size": S.INT, "dataflow": S.STR}},
        "pim": {"channels": S.INT, "banks_per_channel": S.INT, "macs_per_bank": S.INT, "clock_ghz": S.NUM,
                "internal_bandwidth_gb_s": S.NUM, "mode": S.STR, "capacity_gib": S.NUM,
                "stacks": S.INT, "stack_bandwidth_gb_s": S.NUM, "row_buffers": S.INT, "link_gb_s": S.NUM,
                "flops_per_byte": S.NUM, "access_pj_per_byte": S.NUM, "efficiency": S.NUM},
    },
    "node": {
        "devices_per_node": S.INT,
        "package": {"name": S.STR, "devices": S.INT, "bandwidth_gb_s": S.NUM},
        "scaleup": {"name": S.STR, "bandwidth_gb_s": S.NUM, "latency_us": S.NUM, "efficiency": S.NUM,
                    "ll_latency_us": S.NUM, "base_latency_us": S.NUM,
                    "in_network_reduction": S.BOOL, "in_network_efficiency": S.NUM, "in_network_latency_us": S.NUM,
                    "domain_devices": S.INT, "torus_dims": S.INT, "torus_wrap_devices": S.INT},
        "host_link": {"name": S.STR, "bandwidth_gb_s": S.NUM, "efficiency": S.NUM},
        "host_memory_gib": S.NUM,
        "nvme_bandwidth_gb_s": S.NUM,
        "nvme_write_bandwidth_gb_s": S.NUM,
        "nvme_capacity_gib": S.NUM,
        "nvme_direct": S.BOOL,
        "cpu": {"name": S.STR, "tflops_fp32": S.NUM, "memory_bandwidth_gb_s": S.NUM, "memory_efficiency": S.NUM,
                "thread_copy_gb_s": S.NUM},
        "power": {"host_w": S.NUM, "psu_efficiency": S.NUM, "cpu_w": S.NUM, "nvme_w": S.NUM, "nic_w": S.NUM},
    },
    "scaleout": {"name": S.STR, "nic_gb_s": S.NUM, "latency_us": S.NUM, "efficiency": S.NUM,
                 "ll_latency_us": S.NUM},
}

#: dotted schema key -> flat field name used by the cost models (units in the name)
_FIELDS = {
    "device.architecture.compute_units": "compute_units",
    "device.architecture.clock_ghz": "clock_ghz",
    "device.architecture.min_clock_ghz": "min_clock_ghz",
    "device.architecture.l2_cache_mib": "l2_cache_mib",
    "device.gemm_tile.m": "gemm_tile_m",
    "device.gemm_tile.n": "gemm_tile_n",
    "device.gemm_tile.min_reuse": "gemm_tile_min_reuse",
    "device.memory.hbm.capacity_gib": "hbm_capacity_gib",
    "device.memory.hbm.bandwidth_gb_s": "hbm_bandwidth_gb_s",
    "device.kernel_launch_us.value": "kernel_launch_us",
    "device.efficiency.gemm_max": "gemm_max",
    "device.efficiency.memory_max": "memory_max",
    "device.efficiency.gemm_stream_latency_us": "gemm_stream_latency_us",
    "device.power.tdp_w": "tdp_w",
    "device.power.idle_w": "idle_w",
    "device.power.active_w": "active_w",
    "device.power.matrix_w": "matrix_w",
    "device.power.memory_pj_per_byte": "memory_pj_per_byte",
    "device.power.link_pj_per_byte": "link_pj_per_byte",
    "device.power.vector_w": "vector_w",
    "device.power.voltage_floor": "voltage_floor",
    "device.power.gemm_clock_ghz": "gemm_clock_ghz",
    "device.power.host_gap_w": "host_gap_w",
    "node.power.host_w": "host_w",
    "node.power.psu_efficiency": "psu_efficiency",
    "node.power.cpu_w": "host_cpu_w",
    "node.power.nvme_w": "host_nvme_w",
    "node.power.nic_w": "host_nic_w",
    "node.devices_per_node": "devices_per_node",
    "node.package.devices": "package_devices",
    "node.package.bandwidth_gb_s": "package_gb_s",
    "node.scaleup.bandwidth_gb_s": "scaleup_gb_s",
    "node.scaleup.latency_us": "scaleup_latency_us",
    "node.scaleup.efficiency": "scaleup_efficiency",
    "node.scaleup.ll_latency_us": "scaleup_ll_latency_us",
    "node.scaleup.base_latency_us": "scaleup_base_latency_us",
    "node.scaleup.in_network_efficiency": "scaleup_nvls_efficiency",
    "node.scaleup.in_network_latency_us": "scaleup_nvls_latency_us",
    "node.scaleup.domain_devices": "scaleup_domain_devices",
    "node.scaleup.torus_dims": "scaleup_torus_dims",
    "node.scaleup.torus_wrap_devices": "scaleup_torus_wrap_devices",
    "node.host_link.bandwidth_gb_s": "host_link_gb_s",
    "node.host_link.efficiency": "host_link_efficiency",
    "node.host_memory_gib": "host_memory_gib",
    "node.nvme_bandwidth_gb_s": "nvme_bandwidth_gb_s",
    "node.nvme_write_bandwidth_gb_s": "nvme_write_bandwidth_gb_s",
    "node.nvme_capacity_gib": "nvme_capacity_gib",
    "node.cpu.tflops_fp32": "cpu_tflops",
    "node.cpu.memory_bandwidth_gb_s": "cpu_memory_bandwidth_gb_s",
    "node.cpu.memory_efficiency": "cpu_memory_efficiency",
    "node.cpu.thread_copy_gb_s": "cpu_thread_copy_gb_s",
    "scaleout.nic_gb_s": "scaleout_gb_s",
    "scaleout.latency_us": "scaleout_latency_us",
    "scaleout.efficiency": "scaleout_efficiency",
    "scaleout.ll_latency_us": "scaleout_ll_latency_us",
}

_REQUIRED = (
    "name", "description", "kind",
    "device.architecture.compute_units", "device.memory.hbm.capacity_gib",
    "device.memory.hbm.bandwidth_gb_s", "device.efficiency.gemm_max", "device.efficiency.memory_max",
    "device.power.tdp_w", "node.devices_per_node",
)

#: values used when an optional key is absent (physical neutral choices, not device numbers)
_OPTIONAL_DEFAULTS = {
    "clock_ghz": 1.0, "l2_cache_mib": 0.0, "gemm_tile_m": 128, "gemm_tile_n": 128, "gemm_tile_min_reuse": 0.0,
    "kernel_launch_us": 0.0,
    "idle_w": 0.0, "package_devices": 1, "package_gb_s": 0.0, "scaleup_gb_s": 0.0, "scaleup_latency_us": 0.0, "scaleup_efficiency": 1.0, "scaleup_ll_latency_us": 0.0,
    "scaleup_base_latency_us": 0.0, "scaleup_nvls_efficiency": 0.0, "scaleup_nvls_latency_us": 0.0,
    "host_link_gb_s": 0.0,
    # the scale-up fabric joins the node's devices (0: devices_per_node) through switches (0 torus dims)
    "scaleup_domain_devices": 0, "scaleup_torus_dims": 0, "host_link_efficiency": 1.0,
    "scaleup_torus_wrap_devices": 0,  # every slice of a torus closes its rings
    "host_memory_gib": 0.0, "nvme_bandwidth_gb_s": 0.0, "cpu_tflops": 0.0, "cpu_memory_bandwidth_gb_s": 0.0,
    # offloading tiers: writes at the read bandwidth, capacity unchecked (0), NVMe data bounced
    # through host memory, host memory at its nominal bandwidth unless a spec says otherwise
    "nvme_write_bandwidth_gb_s": 0.0, "nvme_capacity_gib": 0.0, "nvme_direct": 0.0, "cpu_memory_efficiency": 1.0,
    # one host thread's copy rate unknown: pageable staging priced at the host's memory bandwidth
    "cpu_thread_copy_gb_s": 0.0,
    "scaleout_gb_s": 0.0, "scaleout_latency_us": 0.0, "scaleout_efficiency": 1.0, "scaleout_ll_latency_us": 0.0,
    # power: without these the model falls back to idle + (TDP - idle) x matrix-engine utilisation
    "active_w": 0.0, "memory_pj_per_byte": 0.0, "link_pj_per_byte": 0.0, "host_w": 0.0, "psu_efficiency": 1.0,
    # the host's parts that draw with use: none stated, the host draws host_w whatever runs
    "host_cpu_w": 0.0, "host_nvme_w": 0.0, "host_nic_w": 0.0,
    "vector_w": 0.0,
    # clocks and voltage under a power cap: no stated lowest clock (the cap may slow the device
    # without bound), and a voltage that stays where it is (the cap scales the clock alone)
    "min_clock_ghz": 0.0, "voltage_floor": 1.0,
    # no measured draw while the host holds the device: its host gaps priced at the busy floor (NaN)
    "host_gap_w": float("nan"),
    # a GEMM's operand stream takes bytes / (bandwidth x memory_max) and nothing more
    "gemm_stream_latency_us": 0.0,
}

_KINDS = ("gpu", "npu", "tpu", "pim", "cpu")
#: architecture generations whose kernels behave alike (runtimes may tune per family)
FAMILIES = ("volta", "turing", "ampere", "hopper", "blackwell", "cdna2", "cdna3", "tpu", "npu", "pim", "other")
_PIM_MODES = ("concurrent", "blocked")

#: what-if keys (docs/reference.md, README) -> flat field
WHATIF_KEYS = {
    "peak_tflops": "peak_tflops",
    "hbm_bandwidth_gb_s": "hbm_bandwidth_gb_s",
    "hbm_capacity_gib": "hbm_capacity_gib",
    "host_link_gb_s": "host_link_gb_s",
    "host_memory_gib": "host_memory_gib",
    "nvme_bandwidth_gb_s": "nvme_bandwidth_gb_s",
    "scaleup_gb_s": "scaleup_gb_s",
    "scaleout_gb_s": "scaleout_gb_s",
    "devices_per_node": "devices_per_node",
    "tdp_w": "tdp_w",
}


@dataclass(frozen=True)
class HardwareSpec:
    """One device kind in its node. Numbers are in the units their names say.

    ``values`` holds the flat numeric fields (see ``_FIELDS``); ``peak_tflops`` and
    ``vector_tflops`` map dtype → dense TFLOP/s; ``gemm_max_by_dtype`` holds per-dtype GEMM
    efficiency overrides; ``attention_max_by_dtype`` the attention cores' ceilings where the spec
    gives them (key ``""``: ``attention_max``, else ``attention_max_<dtype>``); ``sources`` maps
    each schema key to its source string.
    """

    name: str
    description: str
    kind: str
    values: MappingProxyType
    peak_tflops: MappingProxyType
    vector_tflops: MappingProxyType
    gemm_max_by_dtype: MappingProxyType
    attention_max_by_dtype: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    in_network_reduction: bool = False
    family: str = "other"
    pim: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    engines: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    sources: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), repr=False)
    file: str | None = None

    def __getitem__(self, key: str) -> float:
        return self.values[key]

    def peak(self, dtype: str) -> float:
        """Dense peak TFLOP/s at ``dtype`` (NaN when the device lacks the format)."""
        return self.peak_tflops.get(dtype, float("nan"))

    def gemm_max(self, dtype: str) -> float:
        """Fraction of peak a large GEMM reaches at ``dtype``."""
        return self.gemm_max_by_dtype.get(dtype, self.values["gemm_max"])

    def attention_max(self, dtype: str) -> float:
        """Fraction of peak at ``dtype`` that the runtimes' fused-attention shares are taken of:
        ``attention_max_<dtype>``, else ``attention_max``, where the spec gives one, else
        :meth:`gemm_max` (a spec whose ``gemm_max`` is the mean of large Linear shapes can keep
        the attention kernels' reference at the best-shape matmul rate they were fitted against)."""
        by = self.attention_max_by_dtype
        return by.get(dtype, by.get("", self.gemm_max(dtype)))


def hardware_names() -> list[str]:
    """Names of the shipped hardware specs (``perfsim list hardware``)."""
    return sorted(zoo("hardware_specs"))


def parse_hardware(data, path: str = "<dict>") -> HardwareSpec:
    """Build a :class:`HardwareSpec` from a parsed YAML mapping (its ``same_as`` numbers taken from their parts)."""
    data = same_as.resolve(data, path, with_base)
    values, sources = S.check(data, _SCHEMA, required=_REQUIRED)
    kind = values["kind"]
    if kind not in _KINDS:
        raise unknown("kind", kind, _KINDS, field="kind", **_where(data, "kind"))
    family = values.get("device.architecture.family", "other")
    if family not in FAMILIES:
        raise unknown("architecture family", family, FAMILIES, field="device.architecture.family",
                      file=path)
    peak = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("device.compute.peak_tflops.")}
    if not peak:
        raise InputError("at least one dtype is required", field="device.compute.peak_tflops", file=path)
    vector = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("device.compute.vector_tflops.")}
    by_dtype = {k.rsplit("gemm_max_", 1)[1]: v for k, v in values.items() if "efficiency.gemm_max_" in k}
    attention = {k.rsplit("attention_max", 1)[1].lstrip("_"): v for k, v in values.items()
                 if k.startswith("device.efficiency.attention_max")}
    for key, value in {**{f"gemm_max_{d}": v for d, v in by_dtype.items()},
                       **{f"attention_max_{d}".rstrip("_"): v for d, v in attention.items()}}.items():
        if not 0 < value <= 1:
            raise InputError(f"must be in (0, 1], got {value}", field=f"device.efficiency.{key}", file=path)
    flat = dict(_OPTIONAL_DEFAULTS)
    flat.update({_FIELDS[k]: float(v) for k, v in values.items() if k in _FIELDS})
    for key in ("gemm_max", "memory_max"):
        if not 0 < flat[key] <= 1:
            raise InputError(f"must be in (0, 1], got {flat[key]}", field=f"device.efficiency.{key}", file=path)
    if flat["gemm_stream_latency_us"] < 0:
        raise InputError(f"must be >= 0, got {flat['gemm_stream_latency_us']}",
                         field="device.efficiency.gemm_stream_latency_us", file=path)
    for key, where in (("host_link_efficiency", "node.host_link.efficiency"),
                       ("cpu_memory_efficiency", "node.cpu.memory_efficiency")):
        if not 0 < flat[key] <= 1:
            raise InputError(f"must be in (0, 1], got {flat[key]}", field=where, file=path)
    flat["nvme_direct"] = float(bool(values.get("node.nvme_direct", False)))
    _derive_power(flat, sources, path)
    pim = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("device.pim.")}
    _check_pim(pim, data, path)
    engines = _check_engines(values, kind, flat, peak, path)
    return HardwareSpec(
        name=values["name"], description=values["description"], kind=kind,
        values=MappingProxyType(flat), peak_tflops=MappingProxyType(peak),
        vector_tflops=MappingProxyType(vector), gemm_max_by_dtype=MappingProxyType(by_dtype),
        attention_max_by_dtype=MappingProxyType(attention),
        in_network_reduction=bool(values.get("node.scaleup.in_network_reduction", False)), family=family,
        pim=MappingProxyType(pim), engines=MappingProxyType(engines), sources=MappingProxyType(sources), file=path,
    )


def _derive_power(flat: dict, sources: dict, path: str) -> None:
    """Check the power numbers and derive ``matrix_w`` where the spec does not give it.

    The derivation is the measured fact that a large dense GEMM, running at the device's GEMM
    efficiency ceiling, holds the board at its power limit (Splitwise, Patel et al. ISCA'24: the
    compute-bound prompt phase draws about TDP on DGX A100 and H100): TDP = idle + active +
    matrix_w x gemm_max, the GEMM's own memory traffic being small next to its compute.
    """
    if not 0 < flat["psu_efficiency"] <= 1:
        raise InputError(f"must be in (0, 1], got {flat['psu_efficiency']}", field="node.power.psu_efficiency",
                         file=path)
    if not 0 < flat["voltage_floor"] <= 1:
        raise InputError(f"must be in (0, 1], got {flat['voltage_floor']}", field="device.power.voltage_floor",
                         file=path)
    if flat["min_clock_ghz"] >= flat["clock_ghz"]:
        raise InputError(f"must be below clock_ghz ({flat['clock_ghz']:g}), got {flat['min_clock_ghz']:g}",
                         field="device.architecture.min_clock_ghz", file=path)
    floor = flat["idle_w"] + flat["active_w"]
    if floor > flat["tdp_w"]:
        raise InputError(f"idle_w + active_w ({floor:g} W) exceeds tdp_w ({flat['tdp_w']:g} W)",
                         field="device.power.active_w", file=path)
    if not flat["idle_w"] <= flat["host_gap_w"] <= flat["tdp_w"] and flat["host_gap_w"] == flat["host_gap_w"]:
        raise InputError(f"must be between idle_w ({flat['idle_w']:g} W) and tdp_w ({flat['tdp_w']:g} W), got "
                         f"{flat['host_gap_w']:g}", field="device.power.host_gap_w", file=path)
    in_use = flat["host_cpu_w"] + flat["host_nvme_w"] + flat["host_nic_w"]
    if in_use > flat["host_w"]:
        raise InputError(f"cpu_w + nvme_w + nic_w ({in_use:g} W) exceeds host_w ({flat['host_w']:g} W), the host "
                         "at full load", field="node.power.cpu_w", file=path)
    if "matrix_w" not in flat and "gemm_clock_ghz" in flat:
        # the GEMM holds the limit at the clock it sustains there, f = gemm_clock / clock (perfsim.cost.power):
        # tdp - idle = (active + matrix_w gemm_max) f V(f)^2
        f = flat["gemm_clock_ghz"] / flat["clock_ghz"]
        if not 0 < f <= 1:
            raise InputError(f"must be in (0, clock_ghz = {flat['clock_ghz']:g}], got {flat['gemm_clock_ghz']:g}",
                             field="device.power.gemm_clock_ghz", file=path)
        scale = f * max(f, flat["voltage_floor"]) ** 2
        flat["matrix_w"] = ((flat["tdp_w"] - flat["idle_w"]) / scale - flat["active_w"]) / flat["gemm_max"]
        sources["device.power.matrix_w"] = (
            f"derived: ((tdp_w - idle_w) / (f V(f)^2) - active_w) / gemm_max with f = gemm_clock_ghz / clock_ghz = "
            f"{f:.4g}: a large GEMM at the GEMM efficiency ceiling holds the power limit at the clock it sustains there")
    if "matrix_w" not in flat:
        flat["matrix_w"] = (flat["tdp_w"] - floor) / flat["gemm_max"]
        sources["device.power.matrix_w"] = (
            f"derived: (tdp_w - idle_w - active_w) / gemm_max = ({flat['tdp_w']:g} - {flat['idle_w']:g} - "
            f"{flat['active_w']:g}) / {flat['gemm_max']:g}: a large GEMM at the GEMM efficiency ceiling runs at "
            "the power limit at the top clock (Splitwise, Patel et al. ISCA'24: compute-bound prompt phase at "
            "about TDP; no sustained GEMM clock stated)")


def _check_pim(pim: dict, data, path: str) -> None:
    """PIM block: a known mode, a row-buffer count that agrees with it, positive sizes."""
    if not pim:
        return
    where = {"file": path}
    if "mode" in pim and pim["mode"] not in _PIM_MODES:
        raise unknown("pim mode", pim["mode"], _PIM_MODES, field="device.pim.mode", **where)
    for key in ("channels", "banks_per_channel", "stacks", "row_buffers", "internal_bandwidth_gb_s",
                "stack_bandwidth_gb_s", "capacity_gib", "link_gb_s", "flops_per_byte"):
        if key in pim and not pim[key] > 0:
            raise InputError(f"must be positive, got {pim[key]}", field=f"device.pim.{key}", **where)
    # dual row buffers are what let host traffic and PIM commands overlap (NeuPIMs)
    if pim.get("mode") == "concurrent" and pim.get("row_buffers", 2) < 2:
        raise InputError("mode 'concurrent' needs at least 2 row buffers per bank", field="device.pim.row_buffers",
                         **where)
    if "efficiency" in pim and not 0 < pim["efficiency"] <= 1:
        raise InputError(f"must be in (0, 1], got {pim['efficiency']}", field="device.pim.efficiency", **where)
    # the bank-level compute rate comes from the MAC units, or from the bandwidth and FLOPs per byte
    macs = all(k in pim for k in ("channels", "banks_per_channel", "macs_per_bank", "clock_ghz"))
    if not macs and not ("internal_bandwidth_gb_s" in pim and "flops_per_byte" in pim):
        raise InputError("give channels, banks_per_channel, macs_per_bank and clock_ghz, or "
                         "internal_bandwidth_gb_s and flops_per_byte, so the PIM compute rate is known",
                         field="device.pim", **where)
    if "internal_bandwidth_gb_s" not in pim:
        raise InputError("required key is missing", field="device.pim.internal_bandwidth_gb_s", **where)
    # PIM stacks behind a link are memory of their own; PIM in the device's memory is that memory
    if "link_gb_s" in pim and "capacity_gib" not in pim:
        raise InputError("required key is missing (PIM stacks on a link hold memory of their own)",
                         field="device.pim.capacity_gib", **where)


#: systolic-array dataflows: which operand stays in the array while the other streams through
DATAFLOWS = ("weight-stationary", "output-stationary")
_PEAK_TOLERANCE = 0.05  # arrays x size^2 x 2 x clock may differ from the quoted peak by rounding


def _check_engines(values: dict, kind: str, flat: dict, peak: dict, path: str) -> dict:
    """The matrix engine of an NPU/TPU: ``{arrays, size, weight_stationary}``.

    A spec without an ``engines.matrix`` block takes its arrays from ``compute_units`` and their
    size from ``gemm_tile.m``, weight-stationary (the TPU MXU dataflow). Where the block and a
    clock are given, the arrays' MAC rate must agree with the quoted dense peak.
    """
    if kind not in ("npu", "tpu"):
        if any(k.startswith("device.engines.") for k in values):
            raise InputError("engines describe systolic NPU/TPU parts; this part's kind is " + repr(kind),
                             field="device.engines", file=path)
        return {}
    block = {k.rsplit(".", 1)[1]: v for k, v in values.items() if k.startswith("device.engines.matrix.")}
    arrays = int(block.get("arrays", flat["compute_units"]))
    size = int(block.get("size", flat["gemm_tile_m"]))
    dataflow = block.get("dataflow", "weight-stationary")
    if dataflow not in DATAFLOWS:
        raise unknown("dataflow", dataflow, DATAFLOWS, field="device.engines.matrix.dataflow", file=path)
    for key, value in (("arrays", arrays), ("size", size)):
        if value < 1:
            raise InputError(f"must be at least 1, got {value}", field=f"device.engines.matrix.{key}", file=path)
    if block and "device.architecture.clock_ghz" in values:
        rate = arrays * size * size * 2.0 * flat["clock_ghz"] * 1e-3  # TFLOP/s
        top = max(peak.values())
        if abs(rate / top - 1.0) > _PEAK_TOLERANCE:
            raise InputError(f"{arrays} arrays of {size}x{size} at {flat['clock_ghz']:g} GHz give {rate:.1f} "
                             f"TFLOP/s, but the largest peak_tflops is {top:g}", field="device.engines.matrix",
                             file=path)
    return {"arrays": arrays, "size": size, "weight_stationary": dataflow == "weight-stationary"}


def _where(data, key):
    return data.where(key) if isinstance(data, LineDict) else {}


def _load_file(path: str) -> HardwareSpec:
    try:
        mtime = os.stat(path).st_mtime_ns
    except (OSError, ValueError):  # missing, or a name the OS refuses: reading it says which
        mtime = 0
    return _load_cached(path, mtime)


@functools.lru_cache(maxsize=256)
def _load_cached(path: str, mtime: int) -> HardwareSpec:
    data = with_base(load_yaml(path, "hardware"), path)
    spec = parse_hardware(data, path)
    stem = Path(path).stem
    if Path(path).parent == zoo_dir() and spec.name != stem:
        raise InputError(f"name {spec.name!r} differs from the file name {stem!r}", field="name",
                         **_where(data, "name"))
    return spec


#: how many files a ``base:`` chain may stack (deeper is taken for a cycle)
_BASE_DEPTH = 8


def with_base(data, path: str, depth: int = 0):
    """The YAML of a hardware file that names ``base: NAME`` (a zoo spec), laid over that spec's own.

    A derived part (another memory on the same die, the same board with a device beside it) states
    only what differs, so a number fitted or measured once has one home. The file's keys replace the
    base's; its mappings merge into the base's key by key, a ``{value, source}`` number being replaced
    whole. A block with a ``source:`` of its own covers the plain numbers written under it, so it
    keeps none of the base block's plain values (its sub-blocks and sourced numbers still merge).
    """
    if not isinstance(data, dict) or "base" not in data:
        return data
    names = zoo("hardware_specs")
    base = data["base"]
    if not isinstance(base, str) or base not in names:
        raise unknown("base hardware", base, names, field="base", **_where(data, "base"))
    if depth >= _BASE_DEPTH:
        raise InputError(f"`base:` chain longer than {_BASE_DEPTH} files (a cycle?)", field="base",
                         **_where(data, "base"))
    parent = str(names[base])
    return _lay_over(with_base(load_yaml(parent, "hardware"), parent, depth + 1), data, path)


def _lay_over(base, top, path: str):
    """:func:`with_base`'s merge of one mapping ``top`` over ``base``."""
    fresh = "source" in top
    out = LineDict(file=path, line=getattr(top, "line", None))
    for key, value in base.items():
        if not fresh or isinstance(value, dict):
            out[key] = value
    for key, value in top.items():
        if key == "base":
            continue
        below = out.get(key)
        if isinstance(value, dict) and isinstance(below, dict) and "value" not in value:
            value = _lay_over(below, value, path)
        out[key] = value
        if isinstance(top, LineDict) and key in top.lines:
            out.lines[key] = top.lines[key]
    return out


def zoo_dir() -> Path:
    from perfsim.specs.paths import data_dir

    return data_dir("hardware_specs")


def load_hardware(ref, field: str = "hardware") -> HardwareSpec:
    """Resolve ``ref`` — a zoo name, a YAML path, or a parsed spec — to a :class:`HardwareSpec`.

    What-if dicts (``{base: NAME, KEY: value}``) are handled by :func:`resolve_hardware`.
    """
    if isinstance(ref, HardwareSpec):
        return ref
    if not isinstance(ref, (str, Path)):
        raise InputError(f"expected a hardware name or file, got {type(ref).__name__}", field=field)
    return read_once("hardware", _find_hardware, ref, field)


def _find_hardware(ref, field: str) -> HardwareSpec:
    """:func:`load_hardware` of a name or path."""
    names = zoo("hardware_specs")
    if str(ref) in names:
        return _load_file(str(names[str(ref)]))
    if str(ref).endswith((".yaml", ".yml")) or os.path.isfile(str(ref)):
        return _load_file(str(Path(ref).resolve()) if os.path.exists(str(ref)) else str(ref))
    raise unknown("hardware", ref, names, field=field)


def split_whatif(ref, field: str = "hardware"):
    """Split a hardware argument into ``(spec, overrides)``; overrides map what-if keys to values.

    Raises
    ------
    InputError
        Missing ``base``, unknown keys (with close matches), or a value that is not a finite
        positive number.
    """
    if not isinstance(ref, dict):
        return load_hardware(ref, field), {}
    if "base" not in ref:
        raise InputError("a what-if hardware dict needs `base: NAME`", field=field)
    overrides = {}
    for key, value in ref.items():
        if key == "base":
            continue
        if key not in WHATIF_KEYS:
            raise unknown("what-if hardware key", key, list(WHATIF_KEYS), field=f"{field}.{key}")
        if value is not None:  # None keeps the spec's number
            overrides[key] = check_positive(value, f"{field}.{key}")
    return load_hardware(ref["base"], f"{field}.base"), overrides
