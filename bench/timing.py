"""Side-by-side timing: every variant once per round, rounds interleaved, medians.

Machines are noisy (a 2-core box shared with whatever else runs), so no
absolute time is worth much; what the benchmarks report are ratios of
variants measured in the same rounds of the same process.  Each round runs
every variant once, starting from a different variant each round so none is
always first (warm caches, CPU frequency, a neighbour's burst); the median
over rounds is kept.
"""

from __future__ import annotations

import gc
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from time import perf_counter_ns


def _nothing() -> None:
    pass


@dataclass
class Variant:
    """One side of a comparison.

    ``run`` is the measured region and nothing else.  ``setup`` (turn a
    tracer on, warm up) and ``teardown`` (check what was recorded, turn the
    tracer off and drop its data) run around it, untimed, every round: no
    variant's state is ever live while another variant is measured.
    """
    name: str
    run: Callable[[], object]
    setup: Callable[[], object] = _nothing
    teardown: Callable[[], object] = _nothing


class Timings:
    """Nanoseconds of every round, per variant; summaries by median.

    Ratios are taken round by round (the variants of one round ran next to
    each other, so slow drift of the machine cancels) and then summarised by
    their median; ``spread`` is half their interquartile range, to show how
    far a ratio can be trusted on this machine.
    """

    def __init__(self, rounds: dict[str, list[int]]) -> None:
        self.rounds = rounds

    def per_call(self, name: str, calls: int, base: str | None = None) -> list[float]:
        """Per round: ``name``'s time per call, minus ``base``'s if given (the added cost)."""
        ts = self.rounds[name]
        if base is None:
            return [t / calls for t in ts]
        return [(t - b) / calls for t, b in zip(ts, self.rounds[base])]

    def ns(self, name: str, calls: int, base: str | None = None) -> float:
        """Median over rounds of ``per_call``."""
        return statistics.median(self.per_call(name, calls, base))

    def ratio(self, name: str, other: str, base: str | None = None) -> tuple[float, float]:
        """(median, spread) over rounds of name/other, each minus ``base`` if given."""
        a = self.per_call(name, 1, base)
        b = self.per_call(other, 1, base)
        ratios = sorted(x / y for x, y in zip(a, b) if y > 0)
        if not ratios:
            return float("nan"), float("nan")
        if len(ratios) < 4:
            return statistics.median(ratios), (ratios[-1] - ratios[0]) / 2
        q1, _, q3 = statistics.quantiles(ratios, n=4)
        return statistics.median(ratios), (q3 - q1) / 2


def interleave(variants: list[Variant], rounds: int) -> Timings:
    """Time each variant's ``run`` once per round, for ``rounds`` interleaved rounds.

    A full collection runs before each measurement so that garbage left by
    the previous variant is not collected on the next one's time; the
    collector stays enabled during ``run``, because collections caused by
    what a tracer allocates are part of that tracer's cost.
    """
    times: dict[str, list[int]] = {v.name: [] for v in variants}
    for r in range(rounds):
        k = r % len(variants)
        for v in variants[k:] + variants[:k]:
            v.setup()
            try:
                gc.collect()
                t0 = perf_counter_ns()
                v.run()
                t1 = perf_counter_ns()
            finally:
                v.teardown()
            times[v.name].append(t1 - t0)
    return Timings(times)
