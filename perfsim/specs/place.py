"""The ``place`` argument: which op groups of a heterogeneous system run on PIM.

See :mod:`perfsim.analytical.heterogeneous` for what each group means and how it is priced.
"""

from __future__ import annotations

from perfsim.errors import InputError, unknown

#: op groups ``place`` may move
PLACE_KEYS = ("decode_attention", "prefill_attention", "mlp")
#: names of the main device a placement may use
MAIN_NAMES = ("host", "npu", "gpu", "tpu", "cpu")
PLACE_VALUES = ("pim", *MAIN_NAMES)


def check_place(value, field: str = "place"):
    """Check a ``place`` mapping; returns it (``None`` stays ``None``).

    Raises
    ------
    InputError
        Not a mapping, an unknown key or an unknown device, with close matches.

    Examples
    --------
    >>> check_place({"decode_attention": "pim"})
    {'decode_attention': 'pim'}
    >>> check_place({"mlpp": "pim"})
    Traceback (most recent call last):
    ...
    perfsim.errors.InputError: place: unknown place key 'mlpp' (did you mean 'mlp'?)
    """
    if value is None:
        return None
    if not isinstance(value, dict):
        raise InputError("expected a mapping such as {decode_attention: pim}", field=field)
    out = {}
    for key, where in value.items():
        if key not in PLACE_KEYS:
            raise unknown("place key", key, PLACE_KEYS, field=field)
        if not isinstance(where, str) or where not in PLACE_VALUES:
            raise unknown("device", where, PLACE_VALUES, field=f"{field}.{key}")
        out[key] = where
    return out
