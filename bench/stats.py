"""The benches' one percentile: nearest rank on the sorted values (no interpolation), so a table's p95 is a value that
was measured."""

from __future__ import annotations


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]
