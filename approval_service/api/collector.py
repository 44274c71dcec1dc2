"""The garbage collector, tuned for a serving worker.

CPython's default thresholds collect the youngest generation every 700 net
allocations, and a full collection whenever enough objects have outlived two
younger ones. A worker allocates thousands of short-lived containers per
second (fact bundles, documents, rows) and holds a large, long-lived heap
(modules, policies, the in-process fact cache), so under load it spent about a
sixth of its time in the collector, much of it in full collections of about
200 ms each, which every request in flight waits out (measured with
``gc.callbacks`` at 1,500 applications/s; see the README's "Load test").

At start-up, once the container is built, :func:`tune_for_serving` moves every
object then alive into the permanent generation (``gc.freeze``: never scanned
again, it lives as long as the process anyway), and raises the thresholds so
that the youngest generation is collected every ``YOUNG`` net allocations and a
full collection comes a tenth as often. Cyclic garbage is still collected, a
little later; reference counting frees everything else at once, as before.

What lives long but not forever is the costly part: objects that survive young
collections are scanned again in each one until they die. The in-process fact
tier, which takes about one new entry per application, keeps its entries as bytes
for that reason (:class:`data_lookups.cache_stores.PackedMemoryFactCache`).
"""

from __future__ import annotations

import gc

#: net allocations between collections of the youngest generation (CPython: 700)
YOUNG = 20_000
#: collections of a generation before the next older one is collected (CPython: 10, 10)
MIDDLE, OLD = 10, 100


def tune_for_serving() -> None:
    """Freeze what start-up built and collect less often (call once per worker)."""
    gc.collect()  # start-up garbage goes now, not into the permanent generation
    gc.freeze()
    gc.set_threshold(YOUNG, MIDDLE, OLD)
