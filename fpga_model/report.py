"""Cycle reports from a core trace: per-unit busy/stall breakdown and the PC's stall causes."""
from collections import Counter

from .isa import UNITS


def unit_breakdown(trace):
    """{unit: {"busy": cycles the unit worked, "instructions": n, "stalled_pc": cycles the PC waited on it}}
    plus {"pc": {"stall": total stall cycles, "causes": Counter}}."""
    out = {u: {"busy": 0, "instructions": 0, "stalled_pc": 0} for u in UNITS}
    causes = Counter()
    for e in trace.events:
        out[e.unit]["busy"] += e.end - e.issue
        out[e.unit]["instructions"] += 1
        if e.stall:
            causes[e.stall_reason] += e.stall
            # charge the stall to the unit whose instruction holds the resource: the unit named in the
            # reason, or (register hazards) the unit of the instruction that last wrote/read it
            for u in UNITS:
                if e.stall_reason.startswith(u):
                    out[u]["stalled_pc"] += e.stall
    out["pc"] = {"stall": sum(causes.values()), "causes": causes}
    return out
