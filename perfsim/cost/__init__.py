"""Vectorised cost models: roofline per op, collectives, memory."""
