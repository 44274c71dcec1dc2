"""The open-loop engine: pre-built requests sent on a fixed schedule over keep-alive connections.

Request ``i`` is *scheduled* at ``start + i / rate``; the scheduler wakes (the event
loop's timer has about 1 ms resolution), hands every request that is due to an idle
connection, and sleeps until the next one is due. Nothing waits for an answer before
the next request is dispatched, so a slow server cannot slow the arrivals down.

At low rates (one request every :data:`PUNCTUAL_FROM_NS` or less often: an idle
service's latency) a timer's lateness, up to a millisecond and more, would be counted
against the service: there the scheduler sleeps until :data:`SPIN_NS` before the
request is due and then yields to the event loop until it is (answers still arrive
meanwhile): at most 1.5 ms of a core a request, 7.5 % of a core at 50/s, 1.5 % at 10/s.
From 51/s up the timer's lateness (about 0.6 ms at the median) is in the latencies.

HTTP/1.1 without pipelining: a connection carries one request at a time. The pool of
``connections`` is opened before the clock starts. When no connection is idle (and
none can be reopened) the request waits in a FIFO queue for the first to free up.
Its latency is still measured from its scheduled time, so queueing behind a slow
server shows up in the latency (no coordinated omission). Idle connections are used
last-in first-out (a small hot set stays warm) and closed after ``IDLE_CLOSE_S``
idle, before the server's keep-alive timeout (uvicorn: 5 s) can race a request;
they are reopened when a burst needs them.

Per request the engine stores a few integers in preallocated arrays (dispatch lag,
latency, status, outcome); everything else is computed after the run.

Ctrl-C (SIGINT) stops the schedule: the requests due by then are the run's (those
waiting for a free connection are still sent when one frees up), none after them;
they get the drain to answer. A second Ctrl-C, or a first one once the schedule is
done, ends the drain at once: what is still in flight is ``ABANDONED``, and
:attr:`RunResult.interrupted` tells the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import time
from array import array
from collections import deque
from collections.abc import Awaitable, Callable

from approval_service.loadtest.connection import Connection
from approval_service.loadtest.mix import Plan
from approval_service.loadtest.run_result import (
    ABANDONED,
    CONNECTION_ERROR,
    TIMEOUT,
    UNSENT,
    Progress,
    RunResult,
)

IDLE_CLOSE_S = 4.0
TICK_S = 0.1
MIN_SLEEP_NS = 1_000_000
#: from this interval between requests up (50/s and less) the scheduler keeps time closely
PUNCTUAL_FROM_NS = 20_000_000
#: how long before a request is due a punctual scheduler stops sleeping: the timer's
#: resolution and the wake-up
SPIN_NS = 1_500_000
#: a decision's first letters in an answer, to its code in ``run_result.OUTCOMES``
_DECISIONS = {b"app": 1, b"rej": 2, b"ref": 3}


class Engine:
    def __init__(
        self,
        host: str,
        port: int,
        plan: Plan,
        *,
        rate: float,
        connections: int = 256,
        timeout_s: float = 10.0,
        drain_s: float = 10.0,
        progress: Callable[[Progress], None] | None = None,
        progress_every_s: float = 0.5,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self.host, self.port, self.plan = host, port, plan
        self.requests = plan.requests
        self.interval_ns = 1e9 / rate
        self.rate = rate
        self.clock: Callable[[], int] = time.perf_counter_ns  # the scheduler's (tests: a fake)
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self.max_conns = max(1, connections)
        self.timeout_ns = int(timeout_s * 1e9)
        self.drain_ns = int(drain_s * 1e9)
        self.on_progress = progress
        self.progress_every_ns = int(progress_every_s * 1e9)
        n = len(plan)
        self.lag = array("q", bytes(8 * n))
        self.wait = array("q", bytes(8 * n))
        self.latency = array("q", [-1]) * n
        self.status = array("h", bytes(2 * n))
        self.outcome = bytearray(n)
        self.idle: list[Connection] = []
        self.busy: set[Connection] = set()
        self.queue: deque[int] = deque()
        self.opening = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.open_conns = 0
        self.opened = 0
        self.peak = 0
        self.start = 0
        self.dispatched = 0
        self.done = 0  # answered or failed
        self.failed = 0
        self.last_answer = 0
        self.finished = asyncio.Event()
        self.dispatch_done = False
        self.stopped = False
        self.abandoned = False  # the drain was cut short (Ctrl-C)
        self._scheduler: asyncio.Task[None] | None = None
        self._next_progress = 0

    # -- connections ---------------------------------------------------------------
    async def _open(self) -> None:
        """Open one connection; ``opening`` was counted by the caller."""
        loop = asyncio.get_running_loop()
        try:
            _, conn = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        except OSError:
            self.opening -= 1
            if self.queue:  # the request that asked for this connection fails
                self._record_failure(self.queue.popleft(), CONNECTION_ERROR)
                self._maybe_open()
            return
        self.opening -= 1
        self.open_conns += 1
        self.opened += 1
        self.peak = max(self.peak, self.open_conns)
        self._release(conn)

    def _maybe_open(self) -> None:
        if len(self.queue) > self.opening and self.open_conns + self.opening < self.max_conns:
            self.opening += 1  # now, not when the task starts: a burst must not overshoot
            self._tasks.add(task := asyncio.get_running_loop().create_task(self._open()))
            task.add_done_callback(self._tasks.discard)

    def _send(self, conn: Connection, i: int, now: int) -> None:
        assert conn.transport is not None
        conn.current = i
        conn.sent_at = now
        self.wait[i] = now - self.lag[i] - self._scheduled(i)
        self.busy.add(conn)
        conn.transport.write(self.requests[i])

    def _release(self, conn: Connection) -> None:
        """A connection became free: it takes the oldest queued request, or goes idle."""
        if self.queue:
            self._send(conn, self.queue.popleft(), time.perf_counter_ns())
        else:
            conn.idle_since = time.perf_counter_ns()
            self.idle.append(conn)

    # -- called by connections -------------------------------------------------------
    def complete(self, conn: Connection) -> None:
        i = conn.current
        if i < 0:
            return
        now = time.perf_counter_ns()
        self.latency[i] = now - self._scheduled(i)
        self.status[i] = conn.code
        body = conn.body
        at = body.find(b'"decision":"')
        if at >= 0:
            self.outcome[i] = _DECISIONS.get(bytes(body[at + 12 : at + 15]), 0)
        body.clear()
        conn.current = -1
        self.busy.discard(conn)
        self.last_answer = now
        self._one_done()
        if conn.parser.should_keep_alive():
            self._release(conn)
        elif conn.transport is not None:
            conn.transport.close()

    def fail(self, conn: Connection, kind: int) -> None:
        if conn.current >= 0:
            self._record_failure(conn.current, kind)
            conn.current = -1
        self.busy.discard(conn)
        if conn.transport is not None:
            conn.transport.abort()

    def lost(self, conn: Connection) -> None:
        if conn.current >= 0:
            self._record_failure(conn.current, CONNECTION_ERROR)
            conn.current = -1
        self.busy.discard(conn)
        with contextlib.suppress(ValueError):
            self.idle.remove(conn)
        self.open_conns -= 1
        if not self.dispatch_done or self.queue:
            self._maybe_open()

    # -- bookkeeping -------------------------------------------------------------------
    def _scheduled(self, i: int) -> int:
        return self.start + int(i * self.interval_ns)

    def _record_failure(self, i: int, kind: int) -> None:
        self.status[i] = kind
        self.failed += 1
        self._one_done()

    def _one_done(self) -> None:
        self.done += 1
        if self.dispatch_done and self.done >= self.dispatched:
            self.finished.set()

    def _tick(self) -> None:
        """Timeouts, closing long-idle connections, progress."""
        now = time.perf_counter_ns()
        for conn in [c for c in self.busy if now - c.sent_at > self.timeout_ns]:
            self.fail(conn, TIMEOUT)
        while self.idle and now - self.idle[0].idle_since > IDLE_CLOSE_S * 1e9:
            stale = self.idle.pop(0)
            if stale.transport is not None:
                stale.transport.close()
        if self.on_progress is not None and now >= self._next_progress:
            self._next_progress = now + self.progress_every_ns
            self.on_progress(self._progress(now))

    def _progress(self, now: int) -> Progress:
        return Progress(
            dispatched=self.dispatched,
            completed=self.done - self.failed,
            failed=self.failed,
            in_flight=len(self.busy),
            queued=len(self.queue),
            elapsed_s=(now - self.start) / 1e9,
        )

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            self._tick()

    # -- the run -----------------------------------------------------------------------
    def stop(self) -> None:
        """Ctrl-C: the requests due now are the last (see the module docstring); once
        nothing is left to send (a second call, or a first one after the schedule),
        stop waiting for answers too."""
        if self.stopped or self.dispatch_done:
            self.abandoned = True
            self.finished.set()
        if self.stopped:
            return
        self.stopped = True
        scheduler = self._scheduler
        if scheduler is not None and not scheduler.done():
            scheduler.cancel()  # it waits in a sleep: nothing is half dispatched
            if self.start:  # the clock has started: what is due leaves as it would have
                self._dispatch_due(self.clock(), len(self.requests))

    async def run(self) -> RunResult:
        n = len(self.requests)
        loop = asyncio.get_running_loop()
        # the whole pool before the clock starts: growing it under load made the
        # scheduler late (connects cost the loop time just when the server stalls);
        # connections left idle are closed by the ticker after IDLE_CLOSE_S
        first = await loop.create_connection(lambda: Connection(self), self.host, self.port)
        rest = await asyncio.gather(
            *(
                loop.create_connection(lambda: Connection(self), self.host, self.port)
                for _ in range(min(self.max_conns, max(n, 1)) - 1)
            )
        )
        for _, conn in [first, *rest]:
            self.open_conns += 1
            self.opened += 1
            self.idle.append(conn)
        self.peak = self.open_conns
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        self.start = self.clock() + 20_000_000
        self._next_progress = self.start
        ticker = asyncio.get_running_loop().create_task(self._ticker())
        try:
            self._scheduler = loop.create_task(self._schedule(n))
            if self.stopped:  # Ctrl-C while the connections were opening: nothing is sent
                self._scheduler.cancel()
            await asyncio.wait([self._scheduler])  # a stop() cancels it, not this run
            if not self._scheduler.cancelled():
                self._scheduler.result()  # the scheduler's own failure is the run's
            if self.stopped:
                n = self.dispatched  # what came due before the stop; the rest never did
            cut = n < len(self.requests)  # the run is of the requests that came due only
            self.dispatch_done = True
            if self.done >= self.dispatched:
                self.finished.set()
            due_end = time.perf_counter_ns() if cut else self._scheduled(n)
            drain_deadline = due_end + self.drain_ns
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.finished.wait(), max(0.0, (drain_deadline - time.perf_counter_ns()) / 1e9)
                )
        finally:
            ticker.cancel()
        end = time.perf_counter_ns()
        for i in self.queue:
            self.status[i] = UNSENT
        for conn in list(self.busy):
            self.fail(conn, ABANDONED if self.abandoned else TIMEOUT)
        for conn in list(self.idle):
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)  # let the transports' close callbacks run
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        answered_until = self.last_answer if self.finished.is_set() else end
        return RunResult(
            rate=self.rate,
            duration_s=n / self.rate,
            count=n,
            lag_ns=self.lag[:n] if cut else self.lag,
            wait_ns=self.wait[:n] if cut else self.wait,
            latency_ns=self.latency[:n] if cut else self.latency,
            status=self.status[:n] if cut else self.status,
            outcome=self.outcome[:n] if cut else self.outcome,
            elapsed_s=max(answered_until - self.start, 1) / 1e9,
            cpu_s=(cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
            connections_opened=self.opened,
            connections_peak=self.peak,
            interrupted=self.stopped,
        )

    async def _schedule(self, n: int) -> None:
        clock, sleep = self.clock, self.sleep
        while self.dispatched < n:
            now = clock()
            due = self._scheduled(self.dispatched)
            if due > now:
                await sleep(sleep_for(due - now, self.interval_ns))
                continue
            self._dispatch_due(now, n)

    def _dispatch_due(self, now: int, n: int) -> None:
        """Every request of the first ``n`` due by ``now`` to an idle connection, or to
        the queue for the first that frees up."""
        i = self.dispatched
        lag, queue, idle = self.lag, self.queue, self.idle
        while i < n and self._scheduled(i) <= now:
            lag[i] = now - self._scheduled(i)
            if idle:
                self._send(idle.pop(), i, now)
            else:
                queue.append(i)
                self._maybe_open()
            i += 1
        self.dispatched = i


def sleep_for(wait_ns: int, interval_ns: float) -> float:
    """Seconds the scheduler sleeps when the next request is due in ``wait_ns``: 0 is
    one turn of the event loop (a punctual scheduler close to the moment)."""
    if interval_ns >= PUNCTUAL_FROM_NS:
        if wait_ns <= SPIN_NS:
            return 0.0
        return max(wait_ns - SPIN_NS, MIN_SLEEP_NS) / 1e9  # may wake inside SPIN_NS
    # the loop's timers have 1 ms resolution: a shorter sleep would spin
    return max(wait_ns, MIN_SLEEP_NS) / 1e9


def run(
    host: str,
    port: int,
    plan: Plan,
    *,
    rate: float,
    connections: int = 256,
    timeout_s: float = 10.0,
    drain_s: float = 10.0,
    progress: Callable[[Progress], None] | None = None,
) -> RunResult:
    """Run ``plan`` at ``rate`` on a fresh event loop (uvloop when installed); from the
    main thread, Ctrl-C stops the run early (:meth:`Engine.stop`) instead of losing it."""

    async def main() -> RunResult:
        engine = Engine(
            host,
            port,
            plan,
            rate=rate,
            connections=connections,
            timeout_s=timeout_s,
            drain_s=drain_s,
            progress=progress,
        )
        loop = asyncio.get_running_loop()
        try:
            loop.add_signal_handler(signal.SIGINT, engine.stop)
        except (ValueError, RuntimeError):  # not the main thread: Ctrl-C is not ours
            return await engine.run()
        try:
            return await engine.run()
        finally:
            loop.remove_signal_handler(signal.SIGINT)

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        return asyncio.run(main())
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())
