"""The report: the human summary, and the aggregate of several seeds.

`aggregate(reports)` keeps a run report's shape and replaces every number
by `{"mean", "min", "max"}` over the runs (a boolean by the fraction of runs
where it held, with min/max as booleans; lists element by element;
histograms with missing buckets as zero). `summary(report)` reads either
shape: an aggregated figure prints as `mean [min..max]`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

# ---------------------------------------------------------------- aggregate


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def aggregate(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """One report standing for several runs of the same scenario."""
    out = _aggregate(reports, "")
    assert isinstance(out, dict)
    for key in ("nodes", "params", "codec"):  # the same for every run
        if key in reports[0] and all(r.get(key) == reports[0][key] for r in reports):
            out[key] = reports[0][key]
    out["seed"] = [r["seed"] for r in reports]
    out["runs"] = reports
    return out


def _aggregate(values: list[Any], key: str) -> Any:
    present = [v for v in values if v is not None]
    if not present:
        return None
    if all(isinstance(v, dict) for v in present):
        keys = list(dict.fromkeys(k for v in present for k in v))
        if key.endswith("_hist"):
            return {k: _stats([v.get(k, 0) for v in present]) for k in sorted(keys, key=int)}
        return {k: _aggregate([v.get(k) for v in present], k) for k in keys}
    if all(isinstance(v, bool) for v in present):
        return {"mean": sum(present) / len(present), "min": all(present), "max": any(present)}
    if all(_is_number(v) for v in present):
        return _stats(present)
    if all(isinstance(v, list) for v in present):
        length = max(len(v) for v in present)
        return [_aggregate([v[i] for v in present if i < len(v)], key) for i in range(length)]
    return present[0] if all(v == present[0] for v in present) else present


def _stats(values: list[Any]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)}


# ------------------------------------------------------------------ summary


def _fmt(v: Any, fmt: Callable[[float], str], none: str = "-") -> str:
    """A figure, or `mean [min..max]` for an aggregated one."""
    if v is None:
        return none
    if isinstance(v, dict):
        if v["min"] == v["max"]:
            return fmt(v["mean"])
        return f"{fmt(v['mean'])} [{fmt(v['min'])}..{fmt(v['max'])}]"
    return fmt(v)


def _mean(v: Any) -> float:
    if isinstance(v, dict):
        return float(v["mean"])
    return float(v)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _int(x: float) -> str:
    return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"


def _sec(x: float) -> str:
    return f"{x * 1000:.0f} ms" if x < 1 else f"{x:.2f} s"


_f1 = "{:.1f}".format
_int0 = "{:,.0f}".format
_f2 = "{:.2f}".format
_f3 = "{:.3f}".format
_f4 = "{:.4f}".format
_pct0 = "{:.0%}".format


def _bool(v: Any, yes: str, no: str) -> str:
    if isinstance(v, dict):
        if v["min"]:
            return yes
        if not v["max"]:
            return no
        return f"{yes} in {v['mean']:.0%} of runs"
    return yes if v else no


def _k(x: float) -> str:
    return f"{x / 1000:.1f}k" if x >= 1000 else f"{x:.0f}"


def _bytes(x: float) -> str:
    for unit, size in (("MB", 1e6), ("KB", 1e3)):
        if x >= size:
            return f"{x / size:.1f} {unit}"
    return f"{x:.0f} B"


def summary(report: dict[str, Any]) -> str:
    """A compact human summary, one line per section."""
    r = report["run"]
    seed = report["seed"]
    seeds = f"seeds {','.join(map(str, seed))}" if isinstance(seed, list) else f"seed {seed}"
    lines = [
        f"{report['scenario']}: {report['nodes']} nodes, {seeds}"
        + ("" if report.get("codec", True) else ", no codec")
        + f" - {_fmt(r['events'], _int)} events in {_fmt(r['wall_s'], _f1)} s"
        f" ({_fmt(r['events_per_s'], _k)}/s), {_fmt(r['sim_time_s'], _int0)} s simulated,"
        f" peak RSS {_fmt(r['peak_rss_mb'], _int0)} MB"
    ]
    o = report["overlay"]
    p = o["passive"]
    lines.append(
        f"overlay     {_bool(o['connected'], 'connected', 'NOT connected')}:"
        f" {_fmt(o['live'], _int)} live, {_fmt(o['components'], _int)} component(s),"
        f" {_fmt(o['isolated'], _int)} isolated; active degree"
        f" {_fmt(o['active_degree_mean'], _f2)} mean, {_fmt(o['active_degree_max'], _int)} max,"
        f" {_fmt(o['symmetric_fraction'], _pct)} symmetric"
    )
    lines.append(
        f"            clustering {_fmt(o['clustering'], _f4)},"
        f" avg path {_fmt(o['avg_shortest_path'], _f2)},"
        f" diameter {_fmt(o['diameter'], _int)}; passive view {_fmt(p['degree_mean'], _f1)}"
        f" mean, {_fmt(p['stale_fraction'], _pct)} stale"
    )
    b = report["broadcast"]
    lines.append(
        f"broadcast   {_fmt(b['sent'], _int)} sent, reliability {_fmt(b['reliability'], _pct)},"
        f" RMR {_fmt(b['rmr'], _f3)}, LDH {_fmt(b['ldh_max'], _int)},"
        f" latency p50 {_fmt(b['latency_p50_s'], _sec)} / p99 {_fmt(b['latency_p99_s'], _sec)}"
    )
    steps = b.get("by_step") or []
    for i, step in enumerate(steps):
        p99, base = _mean(step["latency_p99_s"]), _mean(steps[0]["latency_p99_s"])
        who = step["from"] if isinstance(step["from"], str) else "?"
        lines.append(
            f"  from {who:<10} {_fmt(step['sent'], _int)} sent,"
            f" RMR {_fmt(step['rmr'], _f3)}, LDH {_fmt(step['ldh_max'], _int)},"
            f" p50 {_fmt(step['latency_p50_s'], _sec)} / p99 {_fmt(step['latency_p99_s'], _sec)}"
            + (f" ({p99 / base:.2f}x the first step's p99)" if i and base else "")
        )
    m = report["membership"]
    enabled = m.get("enabled", True)  # aggregated: {"mean", "min", "max"}
    if enabled is False or (isinstance(enabled, dict) and not enabled["max"]):
        lines.append("membership  off (swim.enabled=false)")
    else:
        lines.append(_membership_line(m))
    msg = report["messages"]
    by_type = msg["by_type"]
    total = sum(_mean(t["messages"]) for t in by_type.values()) or 1.0
    top = sorted(by_type.items(), key=lambda kv: -_mean(kv[1]["messages"]))[:4]
    shares = ", ".join(f"{name} {_mean(t['messages']) / total:.0%}" for name, t in top)
    size = msg["bytes_per_node_per_s"]
    lines.append(
        f"messages    {_fmt(msg['per_node_per_s'], _f1)} per node per s"
        + (f", {_fmt(size, _bytes)} per node per s" if size is not None else "")
        + (f" ({shares})" if shares else "")
        + _refused(msg.get("refused"))
    )
    f = report.get("failure")
    if f is not None:
        rel = f["reliability_by_broadcast"]
        first = f" (first {_fmt(rel[0], _pct)}, last {_fmt(rel[-1], _pct)})" if rel else ""
        lines.append(
            f"failure     {_fmt(f['crashed'], _int)} crashed ({_fmt(f['fraction'], _pct0)}),"
            f" reliability after {_fmt(f['reliability'], _pct)}{first},"
            f" overlay whole again after {_fmt(f['recovered_after_s'], _sec, 'never')}"
        )
    part = report.get("partition")
    if part is not None:
        groups = part["groups"]
        sizes = "/".join(_fmt(g, _int) for g in groups)
        lines.append(
            f"partition   {len(groups)} sides ({sizes}),"
            f" merged after the heal: overlay"
            f" {_fmt(part['overlay_merged_after_s'], _sec, 'never')},"
            f" members {_fmt(part['members_merged_after_s'], _sec, 'never')}"
            f" ({_fmt(part['members_merged_after_first_packet_s'], _sec, 'never')}"
            f" after the first packet across,"
            f" {_fmt(part['first_packet_across_after_s'], _sec, 'never')} after the heal);"
            f" {_fmt(part['false_positives_after_heal'], _int)} false verdict(s) after the heal;"
            f" {_fmt(part['broadcasts_during'], _int)} broadcasts during,"
            f" {_fmt(part['reliability_during'], _pct)} delivered by the end"
        )
    return "\n".join(lines)


def _refused(refused: Any) -> str:
    """Messages the nodes' rules refused, by reason (shown only if any)."""
    if not refused:
        return ""
    kinds = ", ".join(f"{k} {_fmt(v, _int)}" for k, v in refused.items())
    return f"; refused: {kinds}"


def _membership_line(m: dict[str, Any]) -> str:
    detection = (
        f"; detection first p50 {_fmt(m['first_detection_p50_s'], _sec)},"
        f" full p99 {_fmt(m['full_detection_p99_s'], _sec)}"
        if _mean(m.get("failures") or 0) > 0
        else ""
    )
    complete = m.get("complete_after_s")
    wrong = m.get("unconverged_pairs")
    return (
        f"membership  {_bool(m['converged'], 'converged', 'NOT converged')}"
        + (f" ({_fmt(wrong, _int)} member entries off)" if wrong and _mean(wrong) > 0 else "")
        + (
            f" (lists first complete {_fmt(complete, _sec)} after the joins)"
            if complete is not None
            else ""
        )
        + (
            f"; an arrival reaches every list in p50 {_fmt(spread, _sec)},"
            f" p99 {_fmt(m['join_spread_p99_s'], _sec)}"
            if (spread := m.get("join_spread_p50_s")) is not None
            else ""
        )
        + f", {_fmt(m['false_positives'], _int)} false positive(s){detection}"
        + _coordinates(m)
    )


def _coordinates(m: dict[str, Any]) -> str:
    """The coordinates' round-trip estimates against the model
    (sim/coordinate_metrics.py), when measured."""
    p50 = m.get("coord_error_p50")
    if p50 is None:
        return ""
    return (
        f"; rtt from coordinates: error p50 {_fmt(p50, _pct)}, p90"
        f" {_fmt(m['coord_error_p90'], _pct)} over {_fmt(m['coord_pairs'], _int)} pairs"
        f" (a constant guess: p50 {_fmt(m['coord_baseline_error_p50'], _pct)})"
    )
