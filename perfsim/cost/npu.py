"""NPU/TPU device model: a matrix engine of systolic arrays, a vector engine and a DMA engine.

An NPU (the NeuPIMs NPU, a TPU chip) runs each op on the engine it suits, as VPU-EM and
LLMCompass map them, kept analytical here:

* **matrix engine** — GEMMs and the two matmuls of attention, on ``arrays`` systolic arrays of
  ``size × size`` MACs at the dense peak (``peak_tflops``);
* **vector engine** — elementwise ops, norms, activations, softmax (``vector_tflops``);
* **DMA engine** — transfers between device memory and the on-chip buffers (HBM bandwidth ×
  ``memory_max``).

**Systolic utilisation.** A weight-stationary array (TPU MXU, NeuPIMs) holds a ``size × size``
tile of the ``k × n`` weight: loading it takes ``size`` cycles, and a pass of the ``m`` input rows
streams through in ``m + size`` cycles (the last row leaves after the array's fill/drain).
Consecutive passes pipeline: the next tile's weights load behind the running pass and the next
pass enters as the last rows of this one drain, so in steady state a tile holds the array for
``max(m, size)`` cycles (the stream, or the weight load when ``m < size``), and one load and one
drain (``2 size``) are exposed per op, as NeuPIMs' cycle simulator issues them (ONNXim
``SystolicWS::issue_ex_inst``: a weight preload behind a running GEMM costs ``core_height`` cycles
of issue offset, an instruction ``core_height + core_width - 2 + rows`` cycles). A GEMM
``[m × k] · [k × n]`` has ``ceil(k / size) · ceil(n / size)`` weight tiles, spread over the arrays
in waves of ``arrays``. An output-stationary array holds a ``size × size`` output tile instead
and streams ``k`` partial products through it: tiles over ``m`` and ``n``, ``max(k, size)`` cycles
each. The structural efficiency is useful MACs over MAC slots,

    WS:  m k n g / (arrays · size² · (waves · max(m, size) + 2 size)),  waves = ⌈⌈k/size⌉ ⌈n/size⌉ g / arrays⌉
    OS:  m k n g / (arrays · size² · (waves · max(k, size) + 2 size)),  waves = ⌈⌈m/size⌉ ⌈n/size⌉ g / arrays⌉

times the measured large-GEMM ceiling ``gemm_max``: tile quantisation on the array dimensions,
wave quantisation over the arrays and fill/drain, where a GPU has tile and wave quantisation
over its SMs (:func:`perfsim.cost.roofline.gemm_efficiency`). A decode GEMV (``m = 1``) on a
128-wide weight-stationary array uses under 1 / 128 of it: NPUs are built for GEMM, not GEMV
(NeuPIMs, Heo et al. ASPLOS'24).

**Engines overlap within an op, ops follow their dependencies.** Each op streams tiles: the DMA
engine fetches the next tile while the arrays compute the current one and the vector engine
post-processes the previous one (double buffering, as LLMCompass simulates a tile pipeline), so
an op takes ``max(matrix_i, vector_i, dma_i) + o_i`` (``o_i``: its dispatch cost). Each op of a
layer consumes its predecessor's output, so a layer is their sum,

    T_layer = Σ_i max(matrix_i, vector_i, dma_i) + Σ_i o_i
            = max(Σ matrix, Σ vector, Σ dma) + [what dependencies keep from overlapping],

the bracket being ``Σ_i max_e(t_i,e) − max_e Σ_i t_i,e + Σ o_i`` ≥ 0. Work of independent
sub-batches can fill that gap (the NPU + PIM interleaving of :mod:`perfsim.analytical.heterogeneous`).

All functions take arrays (one element per configuration) and broadcast.
"""

from __future__ import annotations

import numpy as np

from perfsim.cost.roofline import gemm_efficiency
from perfsim.plan.rows import any_row, numeric

#: vector-engine operations per softmax score: running max, subtract, exponential, sum, scale
#: (the online softmax of FlashAttention, Dao et al. 2022, Algorithm 1), one operation each
SOFTMAX_OPS = 5.0
#: vector-engine operations per element an elementwise op streams (a lower bound: an add per
#: residual element, a multiply per scaled one), so the vector engine shows only where it is
#: slower than the memory stream
ELEMENTWISE_OPS = 1.0


def systolic_efficiency(m, n, k, groups=1.0, *, arrays, size, weight_stationary, gemm_max=1.0):
    """Fraction of the dense peak a GEMM ``[m × k] · [k × n]`` (``groups`` of them) reaches on
    ``arrays`` systolic arrays of ``size × size``.

    Parameters
    ----------
    m, n, k : array_like
        GEMM shape (m = tokens, the streamed rows; k × n = the weight).
    groups : array_like
        Independent GEMMs of this shape (MoE experts; sequences × heads for attention).
    arrays, size : array_like
        Systolic arrays and their edge (MACs per side).
    weight_stationary : array_like of bool
        True: the weight tile stays in the array (TPU MXU); False: the output tile does.
    gemm_max : array_like
        Measured ceiling of a large GEMM as a fraction of peak.

    Returns
    -------
    ndarray
        Efficiency in (0, gemm_max].

    Examples
    --------
    >>> round(float(systolic_efficiency(8192, 8192, 8192, arrays=8, size=128, weight_stationary=True)), 4)
    0.9999
    >>> round(1.0 / float(systolic_efficiency(1, 4096, 4096, arrays=8, size=128, weight_stationary=True)))
    130
    """
    m = np.maximum(np.asarray(m, dtype=float), 1.0)
    n = np.maximum(np.asarray(n, dtype=float), 1.0)
    k = np.maximum(np.asarray(k, dtype=float), 1.0)
    groups = np.maximum(np.asarray(groups, dtype=float), 1.0)
    size = np.asarray(size, dtype=float)
    ws = np.asarray(weight_stationary, dtype=bool)
    n_tiles = np.ceil(n / size)
    tiles = np.where(ws, np.ceil(k / size), np.ceil(m / size)) * n_tiles * groups
    waves = np.ceil(tiles / arrays)
    cycles = waves * np.maximum(np.where(ws, m, k), size) + 2.0 * size
    return gemm_max * m * n * k * groups / (arrays * size * size * cycles)


def attention_efficiency(rows, depth, span, units, *, arrays, size, weight_stationary, gemm_max=1.0):
    """Systolic efficiency of an attention core's two matmuls, ``QKᵀ`` (``[rows × depth] ·
    [depth × span]``) and ``PV`` (``[rows × span] · [span × depth]``), for ``units`` independent
    (sequence, KV head) pairs; equal FLOPs, so the harmonic mean of the two.

    ``rows`` are the query rows sharing one KV head (new tokens × query heads per KV head),
    ``span`` the keys each attends.
    """
    kw = dict(arrays=arrays, size=size, weight_stationary=weight_stationary, gemm_max=gemm_max)
    qk = systolic_efficiency(rows, span, depth, units, **kw)
    pv = systolic_efficiency(rows, depth, span, units, **kw)
    return 2.0 / (1.0 / qk + 1.0 / pv)


def device_gemm_efficiency(c, m, n, k, groups, gemm_max, m_sd=0.0, tiles=None, share=False):
    """GEMM efficiency on each row's device: systolic arrays where ``c["systolic"]`` is set
    (kind npu/tpu), the GPU tile and wave formula (K split where tiles are few; ``m_sd``: rows
    spread over the groups) elsewhere; ``tiles``: the GEMMs' tiles where the caller has them
    (:func:`perfsim.cost.roofline.gemm_efficiency`); with ``share`` also the useful share of the
    work the GPU's chosen tiles execute (the systolic rows' too: their price counts model FLOPs)."""
    gpu = gemm_efficiency(m, n, groups, c["tile_m"], c["tile_n"], c["units"], gemm_max, k=k,
                          balance=c["peak_flops"] / (c["hbm_bw"] * c["memory_max"]), m_sd=m_sd, tiles=tiles,
                          reuse=c.get("tile_reuse", 0.0), share=share)
    systolic = numeric(c.get("systolic", 0.0))
    if not any_row(systolic > 0):
        return gpu
    npu = systolic_efficiency(m, n, k, groups, arrays=c["arrays"], size=c["array_size"],
                              weight_stationary=c["weight_stationary"] > 0, gemm_max=gemm_max)
    return (np.where(systolic > 0, npu, gpu[0]), gpu[1]) if share else np.where(systolic > 0, npu, gpu)


def vector_time(ops, vector_flops):
    """Seconds the vector engine needs for ``ops`` operations at ``vector_flops`` per second
    (0 where there is no work; NaN rates give 0, the op then runs at its memory speed)."""
    ops = np.asarray(ops, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(ops > 0, ops / vector_flops, 0.0)
    return np.where(np.isfinite(t), t, 0.0)
