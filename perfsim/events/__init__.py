"""Discrete-event composition: timelines of pipeline schedules and serving, trace export.

The engine never prices an operation itself: durations come from the same vectorised cost
models as the closed forms; events only decide *when* work runs.
"""
