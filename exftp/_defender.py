"""
The defender: bans an address after too many failed logins across sessions.

Pure bookkeeping with an explicit clock, so that it is tested with plain numbers.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class Defender:
    """
    Counts failed logins per address in a sliding window and bans addresses
    that reach C{threshold} failures for C{ban_seconds}.

    @ivar threshold: failures within C{window_seconds} that trigger a ban;
        0 disables the defender.
    """

    threshold: int = 20
    window_seconds: float = 600.0
    ban_seconds: float = 900.0
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _bans: dict[str, float] = field(default_factory=dict)

    def failed(self, address: str, now: float) -> bool:
        """
        Record a failed login from C{address}.

        @return: whether this failure got the address banned.
        """
        if self.threshold <= 0:
            return False
        times = self._failures.setdefault(address, deque())
        times.append(now)
        while times and times[0] <= now - self.window_seconds:
            times.popleft()
        if len(times) >= self.threshold:
            del self._failures[address]
            self._bans[address] = now + self.ban_seconds
            return True
        self._forget_old(now)
        return False

    def is_banned(self, address: str, now: float) -> bool:
        """Whether C{address} is banned at C{now}."""
        until = self._bans.get(address)
        if until is None:
            return False
        if until <= now:
            del self._bans[address]
            return False
        return True

    def banned(self, now: float) -> dict[str, float]:
        """The current ban list: address to the time its ban ends."""
        return {address: until for address, until in self._bans.items() if until > now}

    def _forget_old(self, now: float) -> None:
        """Drop addresses whose failures all fell out of the window (bounds memory)."""
        if len(self._failures) < 10_000:
            return
        cutoff = now - self.window_seconds
        for address in [a for a, times in self._failures.items() if times[-1] <= cutoff]:
            del self._failures[address]
