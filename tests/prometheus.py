"""Reading a running service's Prometheus metrics, as a scraper would."""

from __future__ import annotations

import urllib.request


def metric(port: int, name: str) -> float:
    """The sum of every series of metric `name` (all label sets) on the service's metrics port."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )
