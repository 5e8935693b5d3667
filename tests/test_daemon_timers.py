"""The timer task: one heap, deadlines in trio time, stale expiries refused."""

from __future__ import annotations

import enum

import trio
import trio.testing

from daemon.testing import bounded
from daemon.timers import Expired, TimerQueue
from overlay.io import Timer
from tests.helpers import TEST_MAX

# No test may take longer than this, whatever it awaits.


class K(enum.Enum):
    A = "a"
    B = "b"


async def _collect(
    queue: TimerQueue, recv: trio.MemoryReceiveChannel[Expired], until: float
) -> list[tuple[float, Timer]]:
    """Fired timers (with their firing time) until `until`, consumed like the
    driver does."""
    fired: list[tuple[float, Timer]] = []
    with trio.move_on_at(until):
        async for item in recv:
            if queue.take(item):
                fired.append((trio.current_time(), item.timer))
    return fired


@bounded(TEST_MAX)
async def test_timers_fire_in_deadline_order(autojump_clock: trio.testing.MockClock) -> None:
    send, recv = trio.open_memory_channel[Expired](0)
    queue = TimerQueue(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        t0 = trio.current_time()
        queue.set(Timer(K.A, 1), t0 + 3)
        queue.set(Timer(K.A, 2), t0 + 1)
        queue.set(Timer(K.B), t0 + 2)
        queue.set(Timer(K.A, 3), t0 + 1)  # same deadline as A/2: fires after it
        fired = await _collect(queue, recv, t0 + 10)
        nursery.cancel_scope.cancel()
    assert [(round(t - t0, 6), tm) for t, tm in fired] == [
        (1.0, Timer(K.A, 2)),
        (1.0, Timer(K.A, 3)),
        (2.0, Timer(K.B)),
        (3.0, Timer(K.A, 1)),
    ]
    assert len(queue) == 0


@bounded(TEST_MAX)
async def test_an_earlier_timer_wakes_the_sleeping_task(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, recv = trio.open_memory_channel[Expired](0)
    queue = TimerQueue(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        t0 = trio.current_time()
        queue.set(Timer(K.A), t0 + 100)
        await trio.sleep(1)  # the task is asleep until t0 + 100
        queue.set(Timer(K.B), t0 + 2)
        fired = await _collect(queue, recv, t0 + 5)
        nursery.cancel_scope.cancel()
    assert [(round(t - t0, 6), tm) for t, tm in fired] == [(2.0, Timer(K.B))]


@bounded(TEST_MAX)
async def test_set_again_replaces_and_cancel_removes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, recv = trio.open_memory_channel[Expired](0)
    queue = TimerQueue(send)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(queue.run)
        t0 = trio.current_time()
        queue.set(Timer(K.A), t0 + 1)
        queue.set(Timer(K.A), t0 + 4)  # replaces: fires once, at 4
        queue.set(Timer(K.B), t0 + 2)
        queue.cancel(Timer(K.B))
        fired = await _collect(queue, recv, t0 + 10)
        nursery.cancel_scope.cancel()
    assert [(round(t - t0, 6), tm) for t, tm in fired] == [(4.0, Timer(K.A))]


@bounded(TEST_MAX)
async def test_an_expiry_in_flight_is_stale_after_set_or_cancel() -> None:
    send, _recv = trio.open_memory_channel[Expired](1)
    queue = TimerQueue(send)
    queue.set(Timer(K.A), 5.0)
    first = Expired(Timer(K.A), 1)
    queue.set(Timer(K.A), 9.0)  # generation 2
    assert not queue.take(first)
    assert queue.take(Expired(Timer(K.A), 2))
    assert not queue.take(Expired(Timer(K.A), 2))  # consumed once
    queue.set(Timer(K.B), 1.0)
    queue.cancel(Timer(K.B))
    assert not queue.take(Expired(Timer(K.B), 3))


@bounded(TEST_MAX)
async def test_heap_stays_bounded_under_rescheduling(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, _recv = trio.open_memory_channel[Expired](0)
    queue = TimerQueue(send)
    for i in range(10_000):
        queue.set(Timer(K.A, i % 10), 1000.0 + i)
    assert len(queue) == 10
    assert len(queue._heap) <= 2 * 10 + 64 + 1
