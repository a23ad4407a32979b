"""
Process metrics from /proc: resident memory and CPU time of a server and
the processes it forked (vsftpd runs one or two processes per session).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


def _status(pid: int) -> dict[str, int]:
    """The C{kB} fields of /proc/PID/status (VmRSS, VmHWM, ...), in KiB."""
    fields: dict[str, int] = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return fields
    for line in text.splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if len(parts) == 2 and parts[1] == "kB":
            fields[name] = int(parts[0])
    return fields


def _uss(pid: int) -> int:
    """Unique set size in KiB: the pages only this process maps (private clean + dirty), 0 if unknown."""
    total = 0
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Private_Clean:", "Private_Dirty:")):
                total += int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return 0
    return total


def _parents() -> dict[int, int]:
    """Every process's parent, by pid."""
    parents: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # The command name is in parentheses and may contain spaces.
        fields = stat[stat.rfind(")") + 2 :].split()
        parents[int(entry.name)] = int(fields[1])
    return parents


def tree(pid: int) -> list[int]:
    """C{pid} and all its descendants."""
    children: dict[int, list[int]] = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    result, stack = [], [pid]
    while stack:
        current = stack.pop()
        result.append(current)
        stack.extend(children.get(current, []))
    return result


def rss_kib(pid: int, with_children: bool = False) -> int:
    """Resident set size (VmRSS) in KiB, summed over the tree when asked."""
    pids = tree(pid) if with_children else [pid]
    return sum(_status(p).get("VmRSS", 0) for p in pids)


def uss_kib(pid: int, with_children: bool = False) -> int:
    """
    Unique set size in KiB, summed over the tree when asked: unlike RSS, the
    pages a forked session shares with its parent are not counted again.
    """
    pids = tree(pid) if with_children else [pid]
    return sum(_uss(p) for p in pids)


def hwm_kib(pid: int) -> int:
    """Peak resident set size (VmHWM) of one process, in KiB."""
    return _status(pid).get("VmHWM", 0)


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux C{clear_refs} 5); whether it worked."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """
    User + system CPU seconds of C{pid}, including its reaped children, and of
    its live descendants when asked.
    """
    total = 0
    for index, current in enumerate(tree(pid) if with_children else [pid]):
        try:
            stat = Path(f"/proc/{current}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        # utime, stime, cutime, cstime are fields 14-17 (1-based) of the line.
        utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
        total += utime + stime + (cutime + cstime if index == 0 else 0)
    return total / _TICKS


class PeakSampler:
    """Samples the RSS of a process tree in a thread, keeping the highest value."""

    def __init__(self, pid: int, with_children: bool, interval: float = 0.05) -> None:
        self._pid = pid
        self._children = with_children
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_kib(self._pid, self._children))
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.peak = max(self.peak, rss_kib(self._pid, self._children))
