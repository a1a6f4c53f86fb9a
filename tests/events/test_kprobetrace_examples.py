"""The kernel's kprobetrace.rst examples, translated in the README, run as written."""

from __future__ import annotations

import contextlib
import io
import os
import re
import sys

from helpers import ROOT


def readme_example() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    block = text.split("<!-- kprobetrace-example -->", 1)[1].split("<!-- end kprobetrace-example -->")[0]
    return block.split("```python\n", 1)[1].rsplit("```", 1)[0]


def test_readme_kprobetrace_examples_run():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(readme_example(), "README.md", "exec"), {"__name__": "readme"})
    finally:
        sys.path.pop(0)
        sys.modules.pop("shop", None)
    text = out.getvalue()
    # the format file, the trace, the profile
    assert "name: myprobe" in text and 'print fmt: "(%lx) name=%s price=%u qty=%s"' in text
    adds = re.findall(r"myprobe: \(Cart\.add\+0x0\) name='(\w+)' price=(\d+) qty=(\d+)", text)
    assert adds == [("apple", "50", "6"), ("bread", "325", "1"), ("cheese", "799", "2"), ("dates", "1250", "1")]
    totals = sorted(int(v) for v in re.findall(r"myretprobe: \([^)]*<- Cart\.total\) arg1=(\d+)", text))
    assert totals == [563, 2848]            # what the program printed: 5.63 and 28.48
    profile = dict(re.findall(r"^  (\w+) +(\d+) +\d+$", text, re.M))
    assert profile == {"myprobe": "4", "myretprobe": "2"}
    import fentry
    assert fentry.tracefs().read("kprobe_events") == ""
