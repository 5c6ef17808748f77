"""Closed-form composition of op costs into inference requests and training steps."""
