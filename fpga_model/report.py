"""Cycle reports from a core trace: per-unit busy/stall breakdown and the PC's stall causes."""
from collections import Counter

from .isa import UNITS


def unit_breakdown(trace):
    """{unit: {"busy": cycles the unit worked, "instructions": n, "stalled_pc": cycles the PC waited on it
    (its unit busy, or a register one of its instructions was writing or reading)}}
    plus {"pc": {"stall": total stall cycles, "causes": Counter}}."""
    out = {u: {"busy": 0, "instructions": 0, "stalled_pc": 0} for u in UNITS}
    causes = Counter()
    for e in trace.events:
        out[e.unit]["busy"] += e.end - e.issue
        out[e.unit]["instructions"] += 1
        if e.stall:
            causes[e.stall_reason] += e.stall
            # charged to the unit whose instruction held the resource: the busy unit itself, or for a
            # register hazard the unit of the instruction writing/reading that register
            if e.stall_unit in out:
                out[e.stall_unit]["stalled_pc"] += e.stall
    out["pc"] = {"stall": sum(causes.values()), "causes": causes}
    return out
