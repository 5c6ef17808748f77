"""Roofline time of one op on one device, as arrays over configurations.

Every function takes NumPy arrays (or scalars) that broadcast against each other, one element
per configuration, and returns arrays of the broadcast shape. There is no scalar version.

Time of an op = max(compute time, memory time) + fixed overhead, where

* compute time = FLOPs / (peak × efficiency), and the efficiency of a GEMM is the product of the
  device's measured large-GEMM ceiling (``gemm_max``), **tile quantisation** (the output is cut into
  ``tile_m × tile_n`` tiles and partial tiles do full work) and **wave quantisation** (tiles run in
  waves of ``compute_units``; the last wave may leave units idle). Small M picks a shorter tile
  (16, 32, 64, … up to ``tile_m``), as cuBLAS/CUTLASS heuristics do, so a GEMV is not charged a
  128-row tile — it becomes memory-bound on its weights instead (the small-M regime). Where the device
  states the operand reuse its SMs need (``gemm_tile.min_reuse``) the library's choice among CTA
  tiles (64 x 128, 128 x 128, 128 x 256: :data:`_TILE_SHAPES`) is made too, each tile at the rate
  its operand feed allows, so that one row past a tile boundary no longer costs a whole row of
  128-row tiles. When there are
  too few tiles to fill the units the library **splits K** (CUTLASS ``GemmSplitKParallel``, cuBLASLt
  ``SPLITK_NUM``): each tile's K loop is cut into 2, 4, 8 or 16 slices run on separate units, whose
  fp32 partial sums are written and read back once more to be added; the split that finishes first
  is taken (:data:`SPLIT_K`);
* memory time = bytes / (peak bandwidth × ``memory_max``), the fraction of HBM bandwidth a
  streaming kernel reaches; a GEMM's stream takes a fixed ``stream_s`` more (the device's
  ``gemm_stream_latency_us``): its first tiles wait a memory round trip before the load pipeline
  is full, its last tiles' outputs (and split-K partial sums) are written and reduced after the
  last load. A small weight-streaming GEMM (a decode step's) so reaches well under the bandwidth
  of a long copy, as measured GEMMs do;
* overhead = the kernel launch cost, once per kernel.

References: Williams et al., "Roofline" (CACM 2009); NVIDIA, "Matrix Multiplication Background
User's Guide" (tile and wave quantisation), 2023.
"""

from __future__ import annotations

import math

import numpy as np

from perfsim.plan.rows import any_row, floats, maximum, minimum, numeric, where_one

_MIN_TILE_M = 16.0  # smallest M tile of tensor-core MMA kernels (mma.m16n8k16)

#: K splits a GEMM kernel may take (1 = none), and the bytes each extra slice moves per output
#: element: its fp32 partial sum written to the workspace and read back by the reduction (CUTLASS
#: ``GemmSplitKParallel`` + ``ReduceSplitK``, accumulator-typed workspace). The cap of 16 slices is
#: fitted: priced against NVIDIA's measured bf16 GEMM tables (ai-dynamo/aiconfigurator 095f58a51,
#: aic-core/src/aiconfigurator_core/systems/data/{a100_sxm/gemm/trtllm/1.0.0,
#: {h100_sxm,h200_sxm,b200_sxm}/gemm/trtllm/1.3.0rc20}/gemm_perf.parquet; 116,340 shapes, M 1-32K,
#: N and K 32-64K, CUDA graphs) the mean absolute error is 73 % without splits, 26 % (up to 4),
#: 21 % (8), 20 % (16) and 20 % (32); the microbenchmark gemm cases do not move.
SPLIT_K = (1.0, 2.0, 4.0, 8.0, 16.0)
_PARTIAL_BYTES = 8.0
_ALL_SPLITS = np.array(SPLIT_K)
_SPLITS = _ALL_SPLITS[1:]  # the splits past none


#: CTA tiles a GEMM library chooses from, as multiples of the device's ``tile_m x tile_n`` (128 x 128:
#: 64 x 128, 128 x 128, 128 x 256), tiles the CUTLASS kernels of TensorRT-LLM offer on every NVIDIA
#: architecture since sm80 (NVIDIA/TensorRT-LLM 0b53e94719f4bd566e9c75a7df32639a306dfec6,
#: cpp/tensorrt_llm/kernels/cutlass_kernels/cutlass_heuristic.cpp: get_candidate_tiles (sm80: CtaShape
#: 64x128 and 128x128; 128x256 among the int8 tiles), get_candidate_tiles_sm90 (CtaShape64x128,
#: 128x128, 128x256 among others), get_candidate_configs_sm100 (the same three on one SM)); the library
#: takes the one that finishes first (estimate_best_config_from_occupancies scores the candidates and
#: split-K factors by the idle share of the last wave). 256 x 128 is left out: on NVIDIA's measured
#: tables (tests/test_gemm_tiles.py) it never beats 128 x 256. The reference tile comes second: a
#: device without ``reuse`` runs it alone.
_TILE_SHAPES = np.array([[0.5, 1.0], [1.0, 1.0], [1.0, 2.0]])
_REFERENCE = np.array([0.0, 1.0, 0.0])


def gemm_efficiency(m, n, groups, tile_m, tile_n, compute_units, gemm_max, k=None, balance=None, m_sd=0.0,
                    tiles=None, reuse=0.0, share=False):
    """Fraction of peak a GEMM of output ``m × n`` (``groups`` independent ones) reaches.

    Where the device states ``reuse`` the library picks its CTA tile among :data:`_TILE_SHAPES`:
    a ``tm × tn`` tile loads ``tm + tn`` operand elements per step of K for ``tm tn`` products, so
    its matrix engines run at ``min(1, (tm tn / (tm + tn)) / reuse)`` of their rate (``reuse``: the
    products per loaded element the SM's operand feed sustains at full rate, hardware
    ``gemm_tile.min_reuse``), times its own tile and wave quantisation and split-K; the fastest
    candidate is taken. Small M shrinks each candidate's height as :func:`gemm_tiles` does. Grouped
    GEMMs (``groups`` other than 1) keep the one ``tile_m × tile_n`` tile: TensorRT-LLM's grouped
    candidates (get_candidate_tiles_sm90 with GROUPED_GEMM) are all 128 or 256 rows high.

    Parameters
    ----------
    m, n : array_like
        Output rows and columns of each GEMM (tokens × output features).
    groups : array_like
        Number of independent GEMMs of that shape run as one grouped kernel (MoE experts).
    tile_m, tile_n : array_like
        Output tile of one compute unit (SM/CU) at full size.
    compute_units : array_like
        SMs, CUs or systolic arrays.
    gemm_max : array_like
        Measured ceiling of a large square GEMM, as a fraction of peak.
    k, balance : array_like, optional
        Reduction depth, and the device's FLOPs per byte of reachable memory bandwidth (peak FLOP/s
        over bandwidth × memory efficiency). Given, the kernel may split K (:data:`SPLIT_K`): ``s``
        slices run ``s`` times the tiles, and the ``(s - 1) m n`` extra partial sums cost
        :data:`_PARTIAL_BYTES` each at ``balance``, counted here as lost compute time. Omitted: no
        split.
    m_sd : array_like, optional
        Standard deviation of the rows of the ``groups`` GEMMs about their mean ``m`` (the tokens
        each expert of a grouped MoE GEMM receives from a router that is balanced only in
        expectation): each group pads its own rows to whole tiles, and the tiles' total, random
        too, runs in waves whose expected number is taken (:func:`tile_moments`). 0 (the default):
        every group has ``m`` rows.
    tiles : tuple, optional
        :func:`gemm_tiles` of these ``m``, ``n``, ``tile_m``, ``tile_n`` and ``m_sd``, where the caller
        has them (taken here otherwise).
    reuse : array_like, optional
        The device's ``gemm_tile.min_reuse``; 0 (the default): the one ``tile_m × tile_n`` tile.
    share : bool, optional
        Also return the useful share of the work the chosen tile executes (its ``tile_eff`` from
        :func:`gemm_tiles`: partial tiles do full work), for the FLOPs the matrix engines draw
        power for.

    Returns
    -------
    ndarray, or (ndarray, ndarray) with ``share``
        Efficiency in (0, gemm_max]; 0 where ``m`` or ``n`` is 0 (and the chosen tile's useful share).

    Examples
    --------
    >>> float(gemm_efficiency(8192, 8192, 1, 128, 128, 108, 0.86).round(3))
    0.858
    >>> # 16 tiles on 132 units (0.8 x 16 / 132 = 0.097 unsplit): 8 slices keep 128 units busy,
    >>> # their partial sums add 7 x 4 x 330 x 0.776 / 8192 = 88 % to the time: 0.776 / 1.875
    >>> float(gemm_efficiency(128, 2048, 1, 128, 128, 132, 0.8, k=8192, balance=330.0).round(3))
    0.414
    """
    reuse = floats(reuse)
    # (grouped GEMMs keep the one tile: the libraries' grouped kernels offer no 64-row tile)
    chooses = (reuse > 0) & (numeric(groups) == 1)
    one = None
    spread_rows = any_row(np.asarray(m_sd) > 0)
    if not any_row(chooses) or spread_rows:
        tiles = gemm_tiles(m, n, tile_m, tile_n, m_sd) if tiles is None else tiles
        one = _tile_efficiency(m, n, groups, tile_m, tile_n, compute_units, gemm_max, k, balance, tiles, m_sd)
        if not any_row(chooses):
            return (one, tiles[2]) if share else one
    # the candidate tiles on a leading axis, in front of the GEMMs' axes (and the splits' in front of it)
    lead = (-1,) + (1,) * max(getattr(v, "ndim", 0) for v in (m, n, groups, tile_m, tile_n, compute_units, gemm_max,
                                                               k, balance, reuse))
    tm = floats(tile_m) * _TILE_SHAPES[:, 0].reshape(lead)
    tn = floats(tile_n) * _TILE_SHAPES[:, 1].reshape(lead)
    feed = np.where(chooses, minimum(1.0, tm * tn / (tm + tn) / maximum(reuse, 1e-300)), _REFERENCE.reshape(lead))
    candidates = gemm_tiles(m, n, tm, tn)
    each = _tile_efficiency(m, n, groups, tm, tn, compute_units, gemm_max * feed, k, balance, candidates)
    best = each.max(axis=0)
    if not share:
        # (rows whose groups' rows spread take the one tile's expected waves)
        return best if one is None else np.where(chooses, best, one)
    # the useful share of the chosen tile's work (of equally fast tiles, the one that pads least)
    useful = (candidates[2] * (each == best)).max(axis=0)
    if one is None:
        return best, useful
    return np.where(chooses, best, one), np.where(chooses, useful, tiles[2])


def _tile_efficiency(m, n, groups, tile_m, tile_n, compute_units, gemm_max, k, balance, tiles, m_sd=0.0):
    """:func:`gemm_efficiency` of one tile per element (``tiles``: its :func:`gemm_tiles`)."""
    tiles_m, tiles_n, tile_eff, var_m = tiles
    tiles = tiles_m * tiles_n * groups
    # the useful share of the units' slots: base x tiles (split tiles) over the waves' slots
    base = gemm_max * tile_eff / compute_units
    # rows spread over the groups: the tiles' total is random too, and so are its waves (their mean)
    # (rows of tiles: a whole number, tiles_n tiles each, cut into waves of compute_units tiles)
    spread = np.sqrt(np.maximum(groups, 0.0) * var_m) if any_row(np.asarray(m_sd) > 0) else None

    def waves_eff(split):
        units = tiles * split
        waves = np.ceil(units / compute_units) if spread is None else \
            expected_tiles(tiles_m * groups, spread, compute_units / (tiles_n * split))
        # no tiles (zero groups: an expert GEMM in a dense model's row): no work, efficiency 0
        eff = base * units
        return np.divide(eff, waves, out=np.zeros(np.shape(eff)), where=waves > 0)

    if k is None:
        return waves_eff(SPLIT_K[0])
    # reduction time over compute time: (s - 1) m n B / bw  /  (2 m n k / (peak eff))
    cost = _PARTIAL_BYTES / 2.0 * balance / np.maximum(floats(k), 1.0)
    # every split (none first) on a leading axis, in front of every other axis: the waves of all in one step
    axes = max(getattr(v, "ndim", 0) for v in (base, tiles, cost, spread, compute_units))
    every = waves_eff(_ALL_SPLITS.reshape((-1,) + (1,) * axes))
    splits, eff = _SPLITS.reshape((-1,) + (1,) * axes), every[1:]
    return np.maximum(every[0], (eff / (1.0 + (splits - 1.0) * cost * eff)).max(axis=0))


#: standard normal distribution function on a grid (|z| <= 9 holds all but 1e-18 of the mass)
_Z = np.linspace(-9.0, 9.0, 3601)
_PHI = np.array([0.5 * math.erfc(-z / math.sqrt(2.0)) for z in _Z])
_WINDOW = np.arange(18.0)  # tiles summed one by one where the spread is under one tile (z +- 8 sd)


def tile_moments(m, sd, tile):
    """Mean and variance of the tiles of ``tile`` rows that a GEMM of a random whole number of rows
    needs: ``T = ceil(X / tile)`` for ``X`` near normal with mean ``m`` and standard deviation
    ``sd``. ``E[T] = sum over j >= 0 of P(T > j)`` and ``E[T^2] = sum of (2 j + 1) P(T > j)``, with
    ``P(T > j) = P(X > j tile)`` (``X`` an integer: ``P(X >= floor(j tile) + 1/2)`` of the normal,
    a continuity correction; ``tile`` need not be whole). Where the spread is a tile or more the fractional part of ``X / tile``
    is near uniform: ``E[T] = (m - 1/2) / tile + 1/2`` (off by ``exp(-2 pi^2 (sd / tile)^2)`` at
    most, under 3e-9) and ``Var[T] = (sd / tile)^2 + 1/12``. ``(ceil(m / tile), 0)`` where ``sd``
    is 0. Vectorised."""
    m, sd, tile = (np.asarray(v, dtype=float) for v in (m, sd, tile))
    exact = np.ceil(m / tile)
    if not any_row(sd > 0):
        return exact, np.zeros(np.broadcast(m, sd, tile).shape)
    z = (m - 0.5) / tile
    s = np.where(sd > 0, sd / tile, 1.0)
    first = np.maximum(np.floor(z - 8.0 * s), 0.0)
    window = _WINDOW.reshape((-1,) + (1,) * np.ndim(first))
    # P(T > j) = P(X > j tile) = P(X >= floor(j tile) + 1) (a tile of a fractional number of rows
    # where a count of tiles is cut into waves: the waves' tiles per row of tiles)
    above = np.interp((m - 0.5 - np.floor((first + window) * tile)) / np.where(sd > 0, sd, tile), _Z, _PHI)
    # (summed in window order whatever the rows' shape: np.sum pairs a short axis differently)
    mean = first + np.add.accumulate(above, axis=0)[-1]
    square = first * first + np.add.accumulate((2.0 * (first + window) + 1.0) * above, axis=0)[-1]
    smooth = s >= 1.0
    mean = np.where(smooth, z + 0.5, mean)
    var = np.where(smooth, s * s + 1.0 / 12.0, np.maximum(square - mean * mean, 0.0))
    on = sd > 0
    return np.where(on, np.maximum(mean, 0.0), exact), np.where(on, var, 0.0)


def expected_tiles(m, sd, tile):
    """Expected tiles of ``tile`` rows a GEMM of a random whole number of rows needs (mean ``m``,
    standard deviation ``sd``): the mean of :func:`tile_moments`.

    >>> [round(float(v), 3) for v in expected_tiles([128.0, 128.0, 300.0], [0.0, 11.0, 40.0], 128.0)]
    [1.0, 1.482, 2.879]
    """
    return tile_moments(m, sd, tile)[0]


def gemm_tiles(m, n, tile_m, tile_n, m_sd=0.0):
    """``(tiles_m, tiles_n, tile_eff, var_m)``: output tiles along each side (small M takes a
    shorter tile; with ``m_sd`` the expected tiles of rows spread about ``m``, and their variance:
    :func:`tile_moments`) and the share of their work that is useful: partial tiles do full work,
    so a GEMM of ``m`` rows runs ``1 / tile_eff`` times its FLOPs on the matrix engines (what they
    draw power for).

    >>> float(gemm_tiles(1, 8192, 128, 128)[2])  # a GEMV pads its row to a 16-row tile
    0.0625
    """
    safe_m = np.maximum(floats(m), 1.0)
    tm = np.minimum(tile_m, np.maximum(_MIN_TILE_M, 2.0 ** np.ceil(np.log2(safe_m))))
    tiles_m, var_m = tile_moments(safe_m, m_sd, tm) if any_row(np.asarray(m_sd) > 0) else (np.ceil(safe_m / tm), 0.0)
    tiles_n = np.ceil(np.maximum(n, 1.0) / tile_n)
    return tiles_m, tiles_n, (safe_m * n) / (tiles_m * tm * tiles_n * tile_n), var_m


def gemm_time(m, n, k, *, groups=1.0, peak_flops, eff, bandwidth, memory_eff,
              a_bytes, w_bytes, out_bytes, launch_s, dequant_s=0.0, stream_s=0.0):
    """Time (s) of ``groups`` GEMMs ``[m × k] · [k × n]`` and the part of it that is memory.

    Parameters
    ----------
    m, n, k : array_like
        GEMM shape (m = tokens). A zero anywhere means "no such op": time 0, no launch.
    groups : array_like
        Independent GEMMs of this shape in one kernel.
    peak_flops : array_like
        Dense peak, FLOP/s.
    eff : array_like
        Compute efficiency from :func:`gemm_efficiency`.
    bandwidth : array_like
        Device memory bandwidth, B/s.
    memory_eff : array_like
        Fraction of ``bandwidth`` reached.
    a_bytes, w_bytes, out_bytes : array_like
        Bytes per element of the activation input, the weight, and the output.
    launch_s : array_like
        Fixed cost per kernel, s.
    dequant_s : array_like
        Vector-unit time spent converting stored weights to the compute format (weight-only
        quantisation, see :func:`dequant_time`); it adds to the compute side of the roofline.
    stream_s : array_like
        Fixed time of the kernel's operand stream beyond its bytes over the bandwidth (pipeline
        fill and drain); it adds to the memory side.

    Returns
    -------
    (time_s, compute_s, memory_s) : tuple of ndarray
    """
    flops = 2.0 * m * n * k * groups
    moved = groups * (m * k * a_bytes + n * k * w_bytes + m * n * out_bytes)
    compute_s = flops / (peak_flops * np.maximum(eff, 1e-12)) + dequant_s
    memory_s = moved / (bandwidth * memory_eff) + stream_s
    present = flops > 0
    time_s = np.where(present, np.maximum(compute_s, memory_s) + launch_s, 0.0)
    return time_s, np.where(present, compute_s, 0.0), np.where(present, memory_s, 0.0)


_DEQUANT_OPS = 3.0  # vector ops per weight element: unpack (bit logic), subtract zero, multiply scale


def dequant_time(m, n, k, *, groups=1.0, tile_m, vector_flops):
    """Time (s) to convert a ``k × n`` weight to the compute format inside a GEMM kernel.

    Mixed-precision kernels (AWQ, Marlin: Frantar et al. 2024) convert the weight tile in
    registers after loading it; every block of ``tile_m`` output rows converts its own copy, so
    the work grows with ``ceil(m / tile_m)`` and stays hidden behind the weight loads only while
    the GEMM is memory-bound (small batches).

    Examples
    --------
    >>> round(float(dequant_time(1, 8192, 8192, tile_m=128, vector_flops=60e12)) * 1e6, 2)
    3.36
    """
    passes = np.ceil(np.maximum(np.asarray(m, dtype=float), 1.0) / tile_m)
    return _DEQUANT_OPS * k * n * groups * passes / vector_flops


def op_time(flops, moved_bytes, *, peak_flops, compute_eff, bandwidth, memory_eff, launch_s, kernels=1.0):
    """Roofline time (s) of a non-GEMM op: ``max(flops / rate, bytes / bandwidth) + kernels × launch``.

    Parameters
    ----------
    flops, moved_bytes : array_like
        Work and traffic to device memory of the op.
    peak_flops, compute_eff : array_like
        Rate of the unit that runs it (FLOP/s) and the fraction reached.
    bandwidth, memory_eff : array_like
        Device memory bandwidth (B/s) and the fraction reached.
    launch_s, kernels : array_like
        Cost per kernel (s) and number of kernels.

    Examples
    --------
    >>> float(op_time(0.0, 2e9, peak_flops=1e14, compute_eff=1.0, bandwidth=2e12, memory_eff=1.0, launch_s=0.0))
    0.001
    """
    compute_s = flops / (peak_flops * compute_eff)
    memory_s = moved_bytes / (bandwidth * memory_eff)
    present = (numeric(flops) > 0) | (numeric(moved_bytes) > 0)
    return where_one(present, maximum(compute_s, memory_s) + kernels * launch_s, 0.0)
