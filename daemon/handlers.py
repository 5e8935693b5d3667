"""Event handlers: scripts run on member and user events, as Serf's
`-event-handler`.

Rules of this module: it never blocks the agent's driver. The driver tells
it what happened (`member_changed`, `delivered`) with plain synchronous
calls that only queue; each handler's own task runs its script, one run at
a time, with a timeout that kills the script and everything it started.
Every queue is bounded: what does not fit is dropped and counted.

Theory of operation
-------------------
A handler is `[TYPE=]SCRIPT` (`parse_handler`). TYPE is a comma-separated
list of `member-join`, `member-leave`, `member-failed`, `member-update`,
`member` (the four), `user` (a message delivered on any topic), `user:TOPIC`
(on that topic only) or `*` (everything, as no TYPE at all). SCRIPT runs
with `/bin/sh -c`, in a session of its own (so a timeout kills its children
too), with the agent's environment plus, as Serf's `SERF_*` variables:

- `OVERLAY_EVENT`: `member-join`, `member-leave`, `member-failed`,
  `member-update` or `user`;
- `OVERLAY_SELF_NAME`, `OVERLAY_SELF_ADDR`, and `OVERLAY_TAG_<KEY>` for
  each of this member's tags (KEY upper-cased, other than A-Z, 0-9 and _
  as _);
- for a user event, `OVERLAY_USER_EVENT` (the topic), `OVERLAY_USER_ORIGIN`
  (the publisher's name) and `OVERLAY_USER_SEQ` (its sequence number).

Its stdin: for a member event, one line per member, `name<TAB>addr<TAB>tags`
with tags as `k=v,k=v` (sorted; a tab, newline or backslash in them written
`\\t`, `\\n`, `\\\\`, as Serf cleans them); for a user event, the payload.

Member events, from the member list's changes (`overlay.io.MemberChanged`):
alive (or suspect) for a member not live before (new, or back after
failed/left) is a join; alive with other tags an update; failed a failure; left a leave.
Suspicion is no event (Serf has none either: a suspect member is still a
member); neither is alive again after a suspicion. This agent is a member
like the others: its own start is a join, its tag changes updates.

Bounds: while a handler's script runs, new events wait in its queue (at
most `MAX_PENDING`). A member event of the same type as the last one
waiting joins it (one run, one line per member, at most
`MAX_MEMBERS_PER_RUN`), as Serf coalesces member events; otherwise it
queues; when the queue is full it is dropped and counted (`dropped` in
`stats()`, and a rate-limited warning). A script that runs longer than the
timeout is killed (SIGKILL to its process group); a non-zero exit, a kill
or a failure to start is logged (rate-limited, with the first bytes of its
output) and counted.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
from collections import Counter, deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import trio

from daemon.logs import Throttle, event
from daemon.subscriptions import Member

log = logging.getLogger("overlay.handlers")

MEMBER_EVENTS = ("member-join", "member-leave", "member-failed", "member-update")
USER_EVENT = "user"
# Events waiting per handler while its script runs (guess: a burst of
# churn coalesces into a few of them; a steady stream above what the script
# can take is dropped, not buffered without end).
MAX_PENDING = 128
# Members in one coalesced member event (guess: a mass failure of a
# thousand members reaches a script as one run, or a few).
MAX_MEMBERS_PER_RUN = 1024
# Output of a failed run kept for its log line; the rest is read and dropped.
OUTPUT_KEPT = 512
# The script's interpreter (Serf's, on Unix).
SHELL = "/bin/sh"
# Log records per kind of handler failure per minute.
_LOG_BURST = 5


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """One `--event-handler`: which events run which script."""

    script: str
    member: frozenset[str] = frozenset()  # member event types wanted
    all_topics: bool = False  # user events on any topic
    topics: frozenset[str] = frozenset()  # user events on these topics

    def wants_user(self, topic: str) -> bool:
        return self.all_topics or topic in self.topics


def parse_handler(text: str) -> HandlerSpec:
    """`[TYPE[,TYPE...]=]SCRIPT` (see the module's doc); ValueError, with
    one sentence for the operator, if it is not one. Text before the first
    `=` is a TYPE list when it starts with `member`, `user` or `*`;
    otherwise all of it is the script (`FOO=1 ./run.sh` stays a script)."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("an event handler needs a script")
    head, sep, script = text.partition("=")
    if not sep or not head.startswith(("member", "user", "*")):
        return HandlerSpec(text, frozenset(MEMBER_EVENTS), all_topics=True)
    if not script.strip():
        raise ValueError(f"event handler {text!r}: no script after {head}=")
    member: set[str] = set()
    topics: set[str] = set()
    all_topics = False
    for item in head.split(","):
        if item == "*":
            member.update(MEMBER_EVENTS)
            all_topics = True
        elif item == "member":
            member.update(MEMBER_EVENTS)
        elif item in MEMBER_EVENTS:
            member.add(item)
        elif item == USER_EVENT:
            all_topics = True
        elif item.startswith("user:") and len(item) > len("user:"):
            topics.add(item[len("user:") :])
        else:
            raise ValueError(
                f"event handler {text!r}: unknown event type {item!r} (expected "
                "member-join, member-leave, member-failed, member-update, member, "
                "user, user:TOPIC or *)"
            )
    return HandlerSpec(script, frozenset(member), all_topics, frozenset(topics))


def _clean(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def member_line(m: Member) -> str:
    """`name<TAB>addr<TAB>k=v,k=v`: one member on a member event's stdin."""
    tags = ",".join(f"{_clean(k)}={_clean(v)}" for k, v in sorted(m.tags.items()))
    return f"{_clean(m.name)}\t{m.addr}\t{tags}\n"


_ENV_KEY = re.compile(r"[^A-Z0-9_]")


def _env_value(text: str) -> str:
    return text.replace("\x00", "")  # the one character an environment cannot hold


@dataclass(slots=True)
class _Event:
    kind: str
    # Member events: name@addr -> line (a member met again keeps its newest line).
    members: dict[str, str] = field(default_factory=dict)
    topic: str = ""
    origin: str = ""
    seq: int = 0
    payload: bytes = b""

    def stdin(self) -> bytes:
        if self.kind == USER_EVENT:
            return self.payload
        return "".join(self.members.values()).encode("utf-8", "replace")


class _Runner:
    """One handler: its queue and its task, which runs one script at a time."""

    def __init__(self, spec: HandlerSpec, owner: EventHandlers) -> None:
        self.spec = spec
        self.owner = owner
        self.pending: deque[_Event] = deque()
        self.wake = trio.Event()
        self.counters: Counter[str] = Counter()

    def offer_member(self, kind: str, key: str, line: str) -> None:
        if kind not in self.spec.member:
            return
        last = self.pending[-1] if self.pending else None
        if (
            last is not None
            and last.kind == kind
            and (key in last.members or len(last.members) < MAX_MEMBERS_PER_RUN)
        ):
            last.members.pop(key, None)
            last.members[key] = line
            self.counters["coalesced"] += 1
            return
        self._queue(_Event(kind, {key: line}))

    def offer_user(self, ev: _Event) -> None:
        if self.spec.wants_user(ev.topic):
            self._queue(ev)

    def _queue(self, ev: _Event) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.counters["dropped"] += 1
            self.owner.warn(
                "dropped",
                "event handler busy: event dropped",
                handler=self.spec.script,
                event=ev.kind,
                dropped=self.counters["dropped"],
            )
            return
        self.pending.append(ev)
        self.wake.set()

    async def run(self) -> None:
        while True:
            if not self.pending:
                self.wake = trio.Event()
                await self.wake.wait()
                continue
            ev = self.pending.popleft()
            await self.owner.execute(self, ev)


class EventHandlers:
    """Every handler of an agent. `me` gives (name, addr, tags) of this
    member when a script starts."""

    def __init__(
        self,
        specs: list[HandlerSpec],
        timeout: float,
        me: Callable[[], tuple[str, str, Mapping[str, str]]],
    ) -> None:
        self.timeout = timeout
        self._me = me
        self._runners = [_Runner(spec, self) for spec in specs]
        self._throttle = Throttle(burst=_LOG_BURST)
        # Live members (alive or suspect) by name@addr, with their tags: to
        # tell a join from an update (bounded by the member list itself).
        self._live: dict[str, Mapping[str, str]] = {}

    # --------------------------------------------------- from the driver

    def member_changed(self, m: Member) -> None:
        key = f"{m.name}@{m.addr}"
        if m.status in ("alive", "suspect"):
            held = self._live.get(key)
            self._live[key] = m.tags
            if held is None:
                kind = "member-join"  # (first heard of as suspect: a member all the same)
            else:
                kind = "member-update" if dict(held) != dict(m.tags) else ""
        else:
            known = self._live.pop(key, None) is not None
            # About one we never held live (learnt dead): no news here.
            kind = ("member-failed" if m.status == "failed" else "member-leave") if known else ""
        if not kind:
            return
        line = member_line(m)
        for runner in self._runners:
            runner.offer_member(kind, key, line)

    def delivered(self, topic: str, payload: bytes, origin: str, seq: int) -> None:
        ev: _Event | None = None
        for runner in self._runners:
            if runner.spec.wants_user(topic):
                ev = ev or _Event(USER_EVENT, topic=topic, origin=origin, seq=seq, payload=payload)
                runner.offer_user(ev)

    # -------------------------------------------------------------- tasks

    async def run(self) -> None:
        """The handlers' tasks, until cancelled (the agent stops)."""
        async with trio.open_nursery() as nursery:
            for runner in self._runners:
                nursery.start_soon(runner.run)

    def stats(self) -> list[dict[str, object]]:
        return [
            {
                "handler": r.spec.script,
                "pending": len(r.pending),
                **{
                    k: r.counters[k] for k in ("runs", "failed", "timeouts", "dropped", "coalesced")
                },
            }
            for r in self._runners
        ]

    def warn(self, key: str, msg: str, **fields: object) -> None:
        allowed, held = self._throttle.allow(key)
        if allowed:
            event(log, logging.WARNING, msg, **fields, **({"not_logged": held} if held else {}))

    def _env(self, ev: _Event) -> dict[str, str]:
        name, addr, tags = self._me()
        env = dict(os.environ)
        env.update(
            OVERLAY_EVENT=ev.kind,
            OVERLAY_SELF_NAME=_env_value(name),
            OVERLAY_SELF_ADDR=addr,
        )
        for key, value in tags.items():
            env["OVERLAY_TAG_" + _ENV_KEY.sub("_", key.upper())] = _env_value(value)
        if ev.kind == USER_EVENT:
            env.update(
                OVERLAY_USER_EVENT=_env_value(ev.topic),
                OVERLAY_USER_ORIGIN=_env_value(ev.origin),
                OVERLAY_USER_SEQ=str(ev.seq),
            )
        return env

    async def execute(self, runner: _Runner, ev: _Event) -> None:
        """Run `runner`'s script for `ev`: stdin fed, output read (the first
        `OUTPUT_KEPT` bytes kept), killed with its process group after the
        timeout or when the agent stops."""
        script = runner.spec.script
        runner.counters["runs"] += 1
        try:
            proc = await trio.lowlevel.open_process(
                [SHELL, "-c", script],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=self._env(ev),
                start_new_session=True,
            )
        except OSError as exc:
            runner.counters["failed"] += 1
            self.warn("start", "event handler did not start", handler=script, error=str(exc))
            return
        output = bytearray()
        finished = False
        try:
            with trio.move_on_after(self.timeout) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_feed, proc.stdin, ev.stdin())
                    # Until every process of the script's lets go of its
                    # output (a child left running holds it: the timeout
                    # kills it too), then until the script exits.
                    await _drain(proc.stdout, output)
                    await proc.wait()
                    finished = True
        finally:
            if not finished:
                # Not reaped yet, so its process group id is still its own.
                _kill_group(proc)
            with trio.CancelScope(shield=True):
                await proc.wait()
                for stream in (proc.stdin, proc.stdout):
                    if stream is not None:
                        await stream.aclose()
        text = bytes(output).decode("utf-8", "replace").strip()
        if scope.cancelled_caught:
            runner.counters["timeouts"] += 1
            self.warn(
                "timeout",
                "event handler timed out: killed",
                handler=script,
                event=ev.kind,
                timeout=self.timeout,
                output=text,
            )
        elif proc.returncode != 0:
            runner.counters["failed"] += 1
            self.warn(
                "exit",
                "event handler failed",
                handler=script,
                event=ev.kind,
                exit=proc.returncode,
                output=text,
            )
        else:
            event(log, logging.DEBUG, "event handler ran", handler=script, event=ev.kind)


def _kill_group(proc: trio.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


async def _feed(stream: trio.abc.SendStream | None, data: bytes) -> None:
    if stream is None:
        return
    # A script that does not read its stdin, or exits first: fine.
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        if data:
            await stream.send_all(data)
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.aclose()


async def _drain(stream: trio.abc.ReceiveStream | None, kept: bytearray) -> None:
    if stream is None:
        return
    while True:
        try:
            chunk = await stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not chunk:
            return
        room = OUTPUT_KEPT - len(kept)
        if room > 0:
            kept += chunk[:room]


def build(
    texts: tuple[str, ...],
    timeout: float,
    me: Callable[[], tuple[str, str, Mapping[str, str]]],
) -> EventHandlers | None:
    """The agent's handlers, or None without any (ValueError for a bad one)."""
    if not texts:
        return None
    return EventHandlers([parse_handler(t) for t in texts], timeout, me)
