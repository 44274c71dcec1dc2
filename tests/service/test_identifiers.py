"""Identifiers: time-ordered, unguessable, never repeated, across threads."""

from __future__ import annotations

import re
import time
from concurrent.futures import ThreadPoolExecutor

from approval_service.service.identifiers import random_hex, time_ordered_id


def test_shape_is_twelve_hex_digits_of_milliseconds_then_twenty_random() -> None:
    before = time.time_ns() // 1_000_000
    made = time_ordered_id()
    after = time.time_ns() // 1_000_000
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    assert before <= int(made[:12], 16) <= after
    assert time_ordered_id(0x0123456789AB).startswith("0123456789ab")


def test_ids_sort_by_time() -> None:
    earlier = time_ordered_id(1_700_000_000_000)
    later = time_ordered_id(1_700_000_000_001)
    assert earlier < later


def test_no_repeats_across_threads_and_buffer_refills() -> None:
    def many(_: int) -> list[str]:
        return [random_hex(10) for _ in range(5000)]  # 50 kB: a dozen refills per thread

    with ThreadPoolExecutor(4) as pool:
        made = [h for chunk in pool.map(many, range(4)) for h in chunk]
    assert len(made) == len(set(made)) == 20_000
    assert all(len(h) == 20 for h in made)


def test_requests_larger_than_the_buffer_are_served() -> None:
    assert len(random_hex(5000)) == 10_000


def test_a_forked_child_does_not_repeat_its_parents_bytes() -> None:
    import os

    random_hex(1)  # the parent now holds a buffer
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.write(write, random_hex(16).encode())
        os._exit(0)
    os.waitpid(pid, 0)
    child = os.read(read, 64).decode()
    assert child != random_hex(16)  # the parent's next bytes are not the child's
