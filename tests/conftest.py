"""Every test starts and ends with a clean fentry (see support.reset)."""

import pytest

from support import fentry_tools, reset


@pytest.fixture(autouse=True)
def clean_fentry():
    reset()
    yield
    reset()
    assert fentry_tools() == [], "a sys.monitoring tool id is still held by fentry"
