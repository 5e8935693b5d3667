"""An agent and its servers: what `overlay agent` runs.

Rules of this module: it composes, and decides nothing. The agent
(`daemon.agent`) knows nothing of the control API (`daemon.control`) nor of
the metrics endpoint (`daemon.metrics`); those know the agent only through
what they call (`control.ControlledAgent`, an answer function over the
agent's Prometheus registry, `daemon.prometheus`). This module
runs the three in one nursery, so that nothing imports in a circle.

Theory of operation
-------------------
`bind()` binds every socket first (the peer port, the control socket, the
metrics port), each error naming its socket, so that an operator reads
"control API 127.0.0.1:7373: Address already in use" and nothing runs.
`run()` then starts the servers, the agent last (its "agent started" log
line means its control API answers already), and waits for the agent to
stop: after a leave, or `stop()`. A control client that asked for the leave
is answered once the agent has stopped; the server's `finish` lets that
answer out (at most `ANSWER_TIMEOUT`) before the servers are cancelled.

Embedding, with the servers (without them, use `Agent` alone)::

    async with Service(Agent(settings), control="127.0.0.1:0") as service:
        print(service.control_address)

Leaving the `async with` normally leaves the cluster gracefully; leaving it
with an exception stops the agent at once.
"""

from __future__ import annotations

import functools
from types import TracebackType
from typing import Any

import trio

import daemon.control_operator  # noqa: F401  (registers the operator's control ops)
from daemon.addresses import format_addr
from daemon.agent import Agent
from daemon.control import ControlServer
from daemon.errors import naming
from daemon.metrics import MetricsServer
from daemon.transport import Addr

# After the agent stopped, how long its control API may take to answer the
# requests it is handling (a `leave`'s answer: one small frame).
ANSWER_TIMEOUT = 2.0


class Service:
    def __init__(
        self, agent: Agent, *, control: str | None = None, metrics: Addr | None = None
    ) -> None:
        """`control`: "HOST:PORT", "unix:/path" or a path (None: no control
        API); `metrics`: (host, port) of the Prometheus endpoint (None: none).
        Port 0: any free port."""
        self.agent = agent
        self._control_at = control
        self._metrics_at = metrics
        self.control: ControlServer | None = None
        self.metrics: MetricsServer | None = None
        self._cm_nursery: Any = None

    @property
    def control_address(self) -> str | None:
        """Where the control API listens, once bound ("unix:/path" or HOST:PORT)."""
        return self.control.address if self.control is not None else None

    @property
    def metrics_address(self) -> Addr | None:
        return self.metrics.address if self.metrics is not None else None

    async def bind(self) -> None:
        """Bind every socket; an error names the socket and leaves none open."""
        await self.agent.bind()
        try:
            if self._control_at is not None and self.control is None:
                with naming("control API", self._control_at):
                    self.control = await ControlServer.open(self._control_at)
            if self._metrics_at is not None and self.metrics is None:
                with naming("metrics endpoint", format_addr(self._metrics_at)):
                    self.metrics = await MetricsServer.open(self._metrics_at)
        except BaseException:
            await self._close_servers()
            await self.agent.unbind()
            raise

    async def _close_servers(self) -> None:
        if self.control is not None:
            await self.control.aclose()
        if self.metrics is not None:
            await self.metrics.aclose()

    async def run(
        self, *, task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the agent and its servers until the agent stops."""
        await self.bind()
        agent = self.agent
        async with trio.open_nursery() as nursery:
            if self.control is not None:
                await nursery.start(self.control.serve, agent)
            if self.metrics is not None:
                from daemon.prometheus import answer  # prometheus_client: only with --metrics

                scrape = functools.partial(answer, agent.prometheus_registry)
                await nursery.start(self.metrics.serve, scrape)
            servers = {
                "control": self.control_address,
                "metrics": format_addr(self.metrics_address) if self.metrics_address else None,
            }
            await nursery.start(functools.partial(agent.run, servers=servers))
            task_status.started(self)
            await agent.wait_stopped()
            if self.control is not None:
                await self.control.finish(ANSWER_TIMEOUT)
            nursery.cancel_scope.cancel()

    async def __aenter__(self) -> Service:
        # Bind before the nursery: a bind error comes out as itself, not
        # wrapped in an exception group.
        await self.bind()
        self._cm_nursery = trio.open_nursery()
        nursery = await self._cm_nursery.__aenter__()
        try:
            await nursery.start(self.run)
        except BaseException as exc:
            await self._cm_nursery.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        try:
            if exc_type is None:
                await self.agent.leave()
            else:
                self.agent.stop()
        finally:
            try:
                result: bool | None = await self._cm_nursery.__aexit__(exc_type, exc, tb)
            except BaseExceptionGroup as group:
                # The body's own exception, merely wrapped by the nursery:
                # let it propagate as itself.
                if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                    return False
                raise
        return result
