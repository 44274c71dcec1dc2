"""Identifiers of applications and notifications: time-ordered, then unguessable.

The random part comes from the operating system's CSPRNG, read 4 KiB at a time
per thread and handed out in slices: one system call per few hundred
identifiers instead of one each (a call that also gives the GIL away, which
under load costs the event loop a wait for the group-commit writer).
"""

from __future__ import annotations

import os
import threading
import time

_REFILL = 4096


class _Entropy(threading.local):
    def __init__(self) -> None:
        self.buffer = b""
        self.offset = 0

    def take(self, nbytes: int) -> bytes:
        if self.offset + nbytes > len(self.buffer):
            self.buffer = os.urandom(max(_REFILL, nbytes))
            self.offset = 0
        chunk = self.buffer[self.offset : self.offset + nbytes]
        self.offset += nbytes
        return chunk


_entropy = _Entropy()


def _forget_after_fork() -> None:
    """A forked child must not hand out the bytes its parent still holds."""
    _entropy.buffer = b""
    _entropy.offset = 0


os.register_at_fork(after_in_child=_forget_after_fork)


def random_hex(nbytes: int) -> str:
    """``nbytes`` bytes from the OS CSPRNG as hex (never reused)."""
    return _entropy.take(nbytes).hex()


def time_ordered_id(millis: int | None = None) -> str:
    """12 hex digits of milliseconds since the epoch, then 20 random hex digits."""
    if millis is None:
        millis = time.time_ns() // 1_000_000
    return f"{millis:012x}{random_hex(10)}"
