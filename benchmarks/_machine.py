"""What the benchmark scripts record about the machine they ran on."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def loadavg() -> float:
    """The 1-minute load average (NaN where the OS does not say)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


class OtherLoad:
    """Average number of cores other processes kept busy since construction (Linux).

    The machine's busy CPU time (``/proc/stat``) minus this process's own, over the wall
    time: a benchmark records it to show whether its timings shared the cores. NaN where
    ``/proc/stat`` cannot be read.
    """

    def __init__(self) -> None:
        own = os.times()
        self._start = (time.perf_counter(), self._busy_seconds(), own.user + own.system)

    @staticmethod
    def _busy_seconds() -> float:
        try:
            line = Path("/proc/stat").read_text().split("\n", 1)[0]
        except OSError:
            return float("nan")
        fields = [int(v) for v in line.split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")

    def cores(self) -> float:
        """Cores other processes kept busy, on average, since construction."""
        wall0, busy0, own0 = self._start
        own = os.times()
        wall = time.perf_counter() - wall0
        others = (self._busy_seconds() - busy0) - (own.user + own.system - own0)
        return max(0.0, others / wall) if wall > 0 else float("nan")
