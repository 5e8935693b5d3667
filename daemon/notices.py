"""Warnings about the agent's own setup, for its operator: what an agent
without a cluster key exposes, and why a join keeps failing when the seeds
hang up on us.

Rules of this module: it reads the inputs the transport reports and the
agent's settings, never the protocol's state; a warning that could repeat
goes through a `Throttle`.

A seed hanging up. A stream we dial to a seed is reported up as soon as TCP
connects, under the seed's placeholder id (`overlay.io.seed_id`); the first
frame that comes back from the seed names it, and from then on the stream is
reported under the seed's real id. So a `ConnectionDown` for a placeholder
id is a seed that closed (or broke) the stream before a single frame came
back, after it had our first. With keys, a seed that cannot open our frames
does exactly that (as does a joiner that cannot open the seed's, closing on
it); so, most of the time, does a seed with a key hearing a joiner without
one, or the reverse. The join itself is the protocol's business: HyParView
and SWIM retry their seeds, and the warning says why they keep failing.
"""

from __future__ import annotations

import logging

from daemon.logs import Throttle, event
from overlay.io import ConnectionDown, Input, is_seed

NO_KEY = (
    "no cluster key: anyone who can reach this agent's port can join the cluster, "
    "read its broadcasts and member list, and inject messages and member states "
    "(set a key with --key-file; see docs/security.md)"
)
SEED_HUNG_UP = "seed hung up without answering: the cluster key probably differs"
_WITHOUT_KEY = "this agent has no cluster key; the seed probably requires one"
_WITH_KEY = "the seed holds another key, or none"
# One warning per seed at once, then at most one a minute with the count of
# those held back: seeds are retried every few seconds to half a minute.
_BURST = 1
_WINDOW = 60.0


def warn_no_key(log: logging.Logger, port: str) -> None:
    """The one WARNING an agent without a key logs at start."""
    event(log, logging.WARNING, NO_KEY, port=port)


class SeedWatch:
    """Warns when a seed hangs up on us before answering (see the module
    docstring), at most once a minute per seed."""

    def __init__(self, log: logging.Logger, *, keyed: bool) -> None:
        self._log = log
        self._likely = _WITH_KEY if keyed else _WITHOUT_KEY
        self._throttle = Throttle(burst=_BURST, window=_WINDOW)

    def observe(self, item: Input) -> None:
        if not isinstance(item, ConnectionDown) or not is_seed(item.peer):
            return
        seed = item.peer.addr
        allowed, held = self._throttle.allow(seed)
        if allowed:
            event(
                self._log,
                logging.WARNING,
                SEED_HUNG_UP,
                seed=seed,
                likely=self._likely,
                suppressed=held,
            )
