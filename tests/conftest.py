import os

import pytest
from hypothesis import settings

from perfsim.plan import recall

settings.register_profile("ci", max_examples=40, deadline=None)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


@pytest.fixture(autouse=True)
def _estimates_made_anew(monkeypatch):
    """Every estimate of a test is made, not recalled (perfsim.plan.recall): many tests change the cost
    models in place and compare; tests/test_recall.py turns it on."""
    monkeypatch.setattr(recall, "ON", False)
