"""Protocol parameters, one frozen dataclass per layer.

Every default says where it comes from: "paper" with a page where the paper
gives it, "guess" where it does not and we chose.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class HyParViewConfig:
    # Active view size: log10(N)+c with c=1 covers 10,000 nodes; the paper
    # uses 5 (HyParView, DSN 2007, sec. 5).
    active_size: int = 5
    # Passive view size: k*(log10(N)+c) with k=6; the paper uses 30 (sec. 5).
    passive_size: int = 30
    # Active Random Walk Length for FORWARD_JOIN: paper uses 6 (sec. 5).
    arwl: int = 6
    # Passive Random Walk Length: the walk adds the joiner to the passive view
    # when its TTL equals this; paper uses 3 (sec. 5).
    prwl: int = 3
    # Shuffle random-walk length: the paper reuses ARWL (sec. 4.4).
    shuffle_ttl: int = 6
    # Shuffle sample: ka active + kp passive entries (paper: 3 and 4, sec. 5).
    shuffle_active: int = 3
    shuffle_passive: int = 4
    # Shuffle period. The paper counts rounds; 10 s is a guess that keeps the
    # passive view fresh at a negligible cost (iroh-gossip uses 60 s).
    shuffle_period: float = 10.0
    # Jitter applied to every period, a fraction of it (guess): stops all
    # nodes of a cluster started together from shuffling in lock-step.
    jitter: float = 0.1
    # Join: retry a seed after this long while the active view is empty,
    # doubling up to the maximum (guess, like memberlist's retry-join).
    join_retry_initial: float = 1.0
    join_retry_max: float = 30.0
    # A NEIGHBOR request with no reply within this long counts as rejected
    # (guess: comfortably above a WAN round trip).
    neighbor_timeout: float = 5.0
    # How often a node with a gap in its active view tries to fill it from the
    # passive view, beyond the immediate repair on a loss (guess).
    repair_period: float = 2.0


@dataclass(frozen=True, slots=True)
class PlumtreeConfig:
    # IHAVE announcements are batched and flushed this often (guess; iroh 200 ms).
    ihave_flush: float = 0.2
    # GRAFT timeout after the first IHAVE for a missing message, and the
    # shorter one for the following announcers (paper sec. 3.8: "timeout1 and
    # timeout2"; values a guess, iroh uses 500 ms and 250 ms).
    graft_timeout_1: float = 0.5
    graft_timeout_2: float = 0.25
    # Tree optimisation: replace an eager link when a lazy path is this many
    # hops shorter (paper sec. 3.8 uses a threshold; 3 is the iroh default).
    optimization_threshold: int = 3
    # Keep payloads this long to answer GRAFTs and anti-entropy (issue: 60 s).
    retention: float = 60.0
    # Bounds so memory stays flat under load (guess).
    cache_max_messages: int = 10_000
    seen_max_ids: int = 100_000
    # Anti-entropy: exchange recent ids with one random neighbour this often.
    anti_entropy_period: float = 5.0
    # Largest payload a publisher may send (bytes); frames stay under 64 KiB.
    max_payload: int = 60 * 1024


@dataclass(frozen=True, slots=True)
class SwimConfig:
    # Protocol period (SWIM paper sec. 3: T'; memberlist LAN: 1 s).
    probe_period: float = 1.0
    # Direct ping timeout before asking k others (memberlist LAN: 500 ms).
    probe_timeout: float = 0.5
    # Indirect probes via k members (SWIM paper sec. 3.1; memberlist: 3).
    indirect_k: int = 3
    # Lifeguard suspicion: min = mult * log10(N) * period, max = 6 * min
    # (Lifeguard sec. IV-B; memberlist: mult 4, max 6x).
    suspicion_mult: float = 4.0
    suspicion_max_mult: float = 6.0
    # Retransmit each update about lambda * log(N) times (SWIM sec. 4.1;
    # memberlist: 4).
    retransmit_mult: int = 4
    # Local health awareness score ceiling (Lifeguard sec. IV-A: 8).
    awareness_max: int = 8
    # Anti-entropy: full state push-pull every this often (memberlist: 30 s).
    push_pull_period: float = 30.0
    # Failed/left members are kept as tombstones this long (memberlist: 15 s
    # "GossipToTheDeadTime" + reap; guess).
    reap_after: float = 300.0
    # Keep re-trying failed members this often, for this long, so partitions
    # merge by themselves (issue: 30 s; guess 1 h).
    reconnect_period: float = 30.0
    reconnect_for: float = 3600.0
    # Lifeguard refinements can be turned off to measure what they buy.
    lifeguard: bool = True
    # Tags: at most this many bytes of key/value metadata per member.
    max_tags_bytes: int = 512


@dataclass(frozen=True, slots=True)
class Config:
    hyparview: HyParViewConfig = field(default_factory=HyParViewConfig)
    plumtree: PlumtreeConfig = field(default_factory=PlumtreeConfig)
    swim: SwimConfig = field(default_factory=SwimConfig)
    # Hard frame size limit for the codec (issue: 64 KiB).
    max_frame: int = 64 * 1024

    def replace(self, **changes: Any) -> Config:
        """A copy with dotted keys changed, e.g. `replace(**{"hyparview.arwl": 4})`.
        Values given as strings are converted to the field's type."""
        layers: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for key, value in changes.items():
            layer, _, name = key.partition(".")
            if name:
                layers.setdefault(layer, {})[name] = value
            else:
                top[layer] = _convert(self, layer, value)
        for layer, values in layers.items():
            sub = getattr(self, layer, None)
            if sub is None or not dataclasses.is_dataclass(sub):
                raise KeyError(f"unknown config section {layer!r}")
            converted = {k: _convert(sub, k, v) for k, v in values.items()}
            top[layer] = dataclasses.replace(sub, **converted)  # type: ignore[type-var]
        return dataclasses.replace(self, **top)


def _convert(obj: Any, name: str, value: Any) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    if name not in fields:
        raise KeyError(f"unknown config key {name!r} in {type(obj).__name__}")
    current = getattr(obj, name)
    if isinstance(value, str) and not isinstance(current, str):
        if isinstance(current, bool):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ValueError(f"{name}: expected a boolean, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        try:
            return type(current)(value)
        except ValueError:
            raise ValueError(f"{name}: expected {type(current).__name__}, got {value!r}") from None
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if type(value) is not type(current):
        raise ValueError(f"{name}: expected {type(current).__name__}, got {value!r}")
    return value
