"""Transformer op graphs with FLOPs and bytes as arrays over configurations."""
