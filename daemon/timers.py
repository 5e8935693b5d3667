"""The node's timers: one heap, served by one task.

The driver executes `SetTimer`/`CancelTimer` with `set` and `cancel`, which
never block. The task sleeps until the earliest deadline (its cancel scope's
deadline is moved earlier when an earlier timer arrives) and sends each
expired timer to the driver as an `Expired(timer, generation)`. Setting a
timer again, or cancelling it, bumps its generation, so an expiry already on
its way to the driver is recognised as stale there (`take`): a timer fires
at most once per `set`, never after its `cancel`.

Timers with equal deadlines fire in the order they were set: the heap is
keyed on (deadline, sequence number).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import trio

from overlay.io import Timer


@dataclass(frozen=True, slots=True)
class Expired:
    timer: Timer
    generation: int


class TimerQueue:
    def __init__(self, sink: trio.MemorySendChannel[Expired]) -> None:
        self._sink = sink
        self._heap: list[tuple[float, int, Timer]] = []
        self._live: dict[Timer, int] = {}  # timer -> generation of its pending entry
        self._seq = 0
        self._scope: trio.CancelScope | None = None

    def __len__(self) -> int:
        return len(self._live)

    def set(self, timer: Timer, deadline: float) -> None:
        self._seq += 1
        self._live[timer] = self._seq
        heapq.heappush(self._heap, (deadline, self._seq, timer))
        if len(self._heap) > 2 * len(self._live) + 64:
            self._compact()
        if self._scope is not None and deadline < self._scope.deadline:
            self._scope.deadline = deadline

    def cancel(self, timer: Timer) -> None:
        self._live.pop(timer, None)

    def take(self, expired: Expired) -> bool:
        """True if `expired` is still the timer's pending generation (it is
        then consumed); False if it was set again or cancelled since."""
        if self._live.get(expired.timer) != expired.generation:
            return False
        del self._live[expired.timer]
        return True

    def _compact(self) -> None:
        self._heap = [e for e in self._heap if self._live.get(e[2]) == e[1]]
        heapq.heapify(self._heap)

    def _drop_stale_head(self) -> None:
        heap = self._heap
        while heap and self._live.get(heap[0][2]) != heap[0][1]:
            heapq.heappop(heap)

    async def run(self) -> None:
        heap = self._heap
        while True:
            self._drop_stale_head()
            heap = self._heap
            with trio.CancelScope(deadline=heap[0][0] if heap else math.inf) as scope:
                self._scope = scope
                await trio.sleep_forever()
            self._scope = None
            now = trio.current_time()
            due: list[Expired] = []
            heap = self._heap
            while heap and heap[0][0] <= now:
                _, gen, timer = heapq.heappop(heap)
                if self._live.get(timer) == gen:
                    due.append(Expired(timer, gen))
            for item in due:
                await self._sink.send(item)
