"""Every test starts and ends with a clean fentry (see support.reset)."""

import signal

import pytest
from support import fentry_tools, reset


@pytest.fixture(autouse=True)
def clean_fentry():
    reset()
    yield
    reset()
    assert fentry_tools() == [], "a sys.monitoring tool id is still held by fentry"


# A test run started in the background (nohup, `cmd &` in a script) inherits
# SIGINT ignored, and so would every program the tests start, plain python
# included.  Programs should see what they get from a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
