"""Offloading plans: where each kind of state lives across the memory tiers (device, host, NVMe).

An ``offload_*`` argument is ``none`` (all on the device), one tier (``cpu``, ``nvme``), or
fractions per tier, written ``gpu=0.2,cpu=0.5,nvme=0.3`` or as a mapping ``{gpu: 0.2, cpu: 0.8}``.
Fractions lie in [0, 1] and sum to 1; a tier left out holds nothing. Every value is brought to
one canonical spelling (``none``, ``cpu``, ``nvme`` or ``gpu=0.2,cpu=0.8``), so equal plans are
one sweep value, and the cost models read per-tier fraction columns (``w_frac_cpu``, ...).

In inference, ``offload_weights``, ``offload_kv`` and ``offload_activations`` also take ``auto``:
the placement is searched as an offloading engine's policy search does (FlexGen, Sheng et al.
2023, Sec. 4.3: the placement of weights, cache and activations that gives the highest
throughput within the memory of each tier), over :data:`AUTO_CHOICES`
(:mod:`perfsim.analytical.evaluate` runs the search; the result's ``plan`` gives the choice).
"""

from __future__ import annotations

import numpy as np

from perfsim.errors import InputError, finite, shown, unknown

#: memory tiers of an offloading plan, fastest first
TIERS = ("gpu", "cpu", "nvme")
#: other spellings accepted for a tier
_ALIASES = {"hbm": "gpu", "device": "gpu", "host": "cpu", "disk": "nvme", "ssd": "nvme"}
#: offload argument -> prefix of its fraction columns
ARGUMENT_COLUMNS = {
    "offload_weights": "w",
    "offload_optimizer": "opt",
    "offload_grads": "grad",
    "offload_activations": "act",
    "offload_kv": "kv",
}
#: the value that asks for the placement to be searched (inference)
AUTO = "auto"
#: arguments that take ``auto``
AUTO_ARGUMENTS = ("offload_weights", "offload_kv", "offload_activations")
#: the weights' device shares the search tries (FlexGen's policy is continuous; a 10 % grid of the
#: device share, the rest in host memory or on NVMe)
_WEIGHT_SHARES = tuple(i / 10 for i in range(11))
#: ``(gpu, cpu, nvme)`` placements the search tries, per argument
AUTO_CHOICES = {
    "offload_weights": tuple(dict.fromkeys([(g, 1.0 - g, 0.0) for g in _WEIGHT_SHARES]
                                           + [(g, 0.0, 1.0 - g) for g in _WEIGHT_SHARES])),
    "offload_kv": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "offload_activations": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0)),
}
_TOLERANCE = 1e-6
_NOISE = 1e-12  # a share below this is floating-point residue


def _tier(name, field):
    key = name.strip().lower() if isinstance(name, str) else None
    key = _ALIASES.get(key, key)
    if key not in TIERS:
        raise unknown("memory tier", name, TIERS, field=field)
    return key


def _fraction(value, tier, field):
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"the {tier} fraction must be a number, got {value!r}", field=field) from None
    number = finite(value)
    if number is None:
        raise InputError(f"the {tier} fraction must be a number, got {shown(value)}", field=field)
    if not 0.0 <= number <= 1.0:
        raise InputError(f"the {tier} fraction must be in [0, 1], got {number:g}", field=field)
    return number


def fractions(value, field: str = "offload") -> tuple[float, float, float]:
    """``(gpu, cpu, nvme)`` fractions of one offload argument value.

    Raises
    ------
    InputError
        An unknown tier (with close matches), a fraction outside [0, 1], a tier given twice, or
        fractions that do not sum to 1.

    Examples
    --------
    >>> fractions("cpu")
    (0.0, 1.0, 0.0)
    >>> fractions("gpu=0.25, nvme=0.75")
    (0.25, 0.0, 0.75)
    >>> fractions({"gpu": 0.2, "cpu": 0.8})
    (0.2, 0.8, 0.0)
    """
    if value is None:
        return (1.0, 0.0, 0.0)
    if is_auto(value):
        raise InputError("auto is a search, not one placement (perfsim.analytical.evaluate resolves it)",
                         field=field)
    if isinstance(value, str) and "=" not in value:
        text = value.strip().lower()
        if text == "none":
            return (1.0, 0.0, 0.0)
        tier = _tier(text, field)
        return tuple(1.0 if t == tier else 0.0 for t in TIERS)
    if isinstance(value, str):
        pairs = []
        for part in value.split(","):
            if not part.strip():
                continue
            if "=" not in part:
                raise InputError(f"expected TIER=FRACTION pairs such as gpu=0.2,cpu=0.8, got {part.strip()!r}",
                                 field=field)
            name, frac = part.split("=", 1)
            pairs.append((name, frac.strip()))
    elif isinstance(value, dict):
        pairs = list(value.items())
    else:
        raise InputError(f"expected none, a tier ({', '.join(TIERS[1:])}) or fractions such as gpu=0.2,cpu=0.8, "
                         f"got {value!r}", field=field)
    if not pairs:
        raise InputError("no tier fractions given", field=field)
    share = dict.fromkeys(TIERS, 0.0)
    seen = set()
    for name, frac in pairs:
        tier = _tier(name, field)
        if tier in seen:
            raise InputError(f"the {tier} tier is given twice", field=field)
        seen.add(tier)
        share[tier] = _fraction(frac, tier, field)
    total = sum(share.values())
    if abs(total - 1.0) > _TOLERANCE:
        raise InputError(f"tier fractions must sum to 1, got {total:g} ("
                         + ", ".join(f"{t}={share[t]:g}" for t in TIERS if t in seen) + ")", field=field)
    # a share at the level of rounding noise (1 - 0.9999999999999999) is nothing, not a tier that
    # switches offloading on
    share = {t: (0.0 if share[t] < _NOISE else share[t]) for t in TIERS}
    total = sum(share.values())
    return tuple(share[t] / total for t in TIERS)


def is_auto(value) -> bool:
    """Whether an offload value asks for the placement to be searched."""
    return isinstance(value, str) and value.strip().lower() == AUTO


def canonical(value, field: str = "offload") -> str:
    """The one spelling of an offload value: ``none``, ``cpu``, ``nvme``, ``gpu=0.2,cpu=0.8``, or
    ``auto`` for the arguments that take it.

    >>> canonical({"cpu": 1.0}), canonical("gpu=0.5,cpu=0.5"), canonical("gpu"), canonical(" Auto ", "offload_kv")
    ('cpu', 'gpu=0.5,cpu=0.5', 'none', 'auto')
    """
    if is_auto(value):
        if field not in AUTO_ARGUMENTS:
            raise InputError(f"auto is taken by {', '.join(AUTO_ARGUMENTS)} (a searched inference placement), "
                             f"not by {field}", field=field)
        return AUTO
    return spelled(fractions(value, field))


def spelled(share) -> str:
    """The canonical spelling of ``(gpu, cpu, nvme)`` fractions.

    >>> spelled((0.3, 0.7, 0.0)), spelled((1.0, 0.0, 0.0))
    ('gpu=0.3,cpu=0.7', 'none')
    """
    if share[0] == 1.0:
        return "none"
    for tier, frac in zip(TIERS[1:], share[1:], strict=True):
        if frac == 1.0:
            return tier
    return ",".join(f"{t}={f:.12g}" for t, f in zip(TIERS, share, strict=True) if f > 0.0)


def offload_columns(grid, experts=0.0) -> dict:
    """Per-tier fraction columns of every offload argument: ``{prefix}_frac_cpu``, ``{prefix}_frac_nvme``
    (the device keeps the rest), and ``offloaded`` (1 where any state leaves the device).

    ``offload_experts`` (MoE routed experts, ``exp_frac_*``) follows ``offload_weights`` where
    it is not given; ``exp_given`` marks the rows that give it (an expert cache: see
    :mod:`perfsim.analytical.offload`) for a model with routed experts (``experts``, the
    model's routed-expert count per row); a model without them ignores it."""
    c = {}
    any_off = 0.0
    for name, prefix in ARGUMENT_COLUMNS.items():
        values = grid.values(name)
        # (auto: the search sets the fractions; until then the row counts as offloaded, so an
        # offloading engine runs it)
        shares = [(0.0, 1.0, 0.0) if is_auto(v) else fractions(v, name) for v in values]
        c[f"{prefix}_frac_cpu"] = grid.gather(name, [s[1] for s in shares])
        c[f"{prefix}_frac_nvme"] = grid.gather(name, [s[2] for s in shares])
        if name in AUTO_ARGUMENTS:
            c[f"{prefix}_auto"] = grid.gather(name, [float(is_auto(v)) for v in values])
        any_off = np.maximum(any_off, c[f"{prefix}_frac_cpu"] + c[f"{prefix}_frac_nvme"])
    values = grid.values("offload_experts")
    shares = [(np.nan, np.nan, np.nan) if v is None else fractions(v, "offload_experts") for v in values]
    given = grid.gather("offload_experts", [0.0 if v is None else 1.0 for v in values])
    c["exp_given"] = np.where(np.asarray(experts) > 0, given, 0.0)
    for i, tier in ((1, "cpu"), (2, "nvme")):
        share = grid.gather("offload_experts", [s[i] for s in shares])
        c[f"exp_frac_{tier}"] = np.where(c["exp_given"] > 0, share, c[f"w_frac_{tier}"])
    any_off = np.maximum(any_off, c["exp_frac_cpu"] + c["exp_frac_nvme"])
    c["offloaded"] = np.where(np.asarray(any_off) > 0.0, 1.0, 0.0)
    return c
