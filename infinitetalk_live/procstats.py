"""What a process has used so far, read from /proc (Linux): for benchmarks and tests that measure the services."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of the process, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mb(pid: int) -> float:
    """Resident memory of the process, in MiB."""
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_BYTES / 2**20


def io_bytes(pid: int) -> int:
    """Bytes the process read and wrote through system calls (sockets included)."""
    with open(f"/proc/{pid}/io") as stats:
        fields = dict(line.split(": ") for line in stats.read().splitlines())
    return int(fields["rchar"]) + int(fields["wchar"])
