"""How soon a serving worker's group-commit writer gets the GIL back.

A worker runs two threads that matter: the event loop (HTTP, fact reads,
decisions) and the group-commit writer, which spends most of its time waiting
for PostgreSQL outside the GIL. When PostgreSQL answers, the writer wants the
GIL back to finish the group and wake the applications waiting on it; CPython
hands it over only when the running thread releases it or after the switch
interval, 5 ms by default, during which the event loop keeps running Python.
So under load every group's answer could sit up to 5 ms before anyone saw it,
and with it every application of the group.

:func:`apply_switch_interval` sets the interval a worker starts with
(``MIAOPI_GIL_SWITCH_MS``). The default stays CPython's 5 ms: on one VM, one
pair of runs at 400 applications/s on one worker gave a p99 of 21 ms with
0.5 ms against 80 ms without, but on the next VM eleven alternated pairs from
400 to 1,000/s could not tell the two apart (0.5 ms better in seven, worse in
four, the same CPU an application; README, "Load test"). Operators whose
group round trips are slow under load can try it with ``miaopi loadtest``.
"""

from __future__ import annotations

import sys


def apply_switch_interval(milliseconds: float) -> None:
    """Let a thread that waits for the GIL take it after ``milliseconds`` at most."""
    if milliseconds <= 0:
        raise ValueError(f"switch interval must be above 0 ms, not {milliseconds}")
    sys.setswitchinterval(milliseconds / 1000)
