"""The paper's FPGA numbers (v7 App. A, Tables 4 and 5; docs/accelerator.md). These are *inputs*: the
model never reads them to compute a cycle, only paper.py and the tests compare against them (and
memory.py derives its two calibrated constants from the rows it names)."""

# Table 5: single core, one block. d -> (runtime ms, projected ms with 512-bit bursting,
#          idle W, active W, %ALM core, %ALM total, clock MHz)
TABLE5 = {
    512: dict(runtime_ms=43.0, burst_ms=0.67, idle_w=13.36, active_w=13.39, alm_core=2.8, alm_total=9, clock_mhz=60),
    1024: dict(runtime_ms=112.0, burst_ms=1.75, idle_w=13.64, active_w=13.65, alm_core=5.7, alm_total=11, clock_mhz=54),
    2048: dict(runtime_ms=456.0, burst_ms=7.13, idle_w=13.92, active_w=13.93, alm_core=11, alm_total=16, clock_mhz=52),
}

# Table 4: cores -> (%ALM core, %ALM total, %M20K core, %M20K total, active W, idle W, core ms, DDR4 ms).
# Only the 1-core row was measured; the others are the paper's estimates.
TABLE4 = {
    1: dict(alm_core=2.9, alm_total=9, m20k_core=0.01, m20k_total=2.87, active_w=13.67, idle_w=13.68, core_ms=46.36, ddr_ms=0.09),
    8: dict(alm_core=23.21, alm_total=26.9, m20k_core=0.08, m20k_total=3.06, active_w=39.78, idle_w=39.94, core_ms=46.36, ddr_ms=0.18),
    16: dict(alm_core=46.43, alm_total=50.1, m20k_core=0.15, m20k_total=5.13, active_w=75.25, idle_w=73.97, core_ms=46.36, ddr_ms=0.72),
    26: dict(alm_core=75.45, alm_total=100, m20k_core=0.25, m20k_total=22.64, active_w=166.30, idle_w=149.66, core_ms=46.36, ddr_ms=5.76),
}
TABLE4_D, TABLE4_CLOCK_MHZ = 512, 60      # our reading: the measured core is the d=512, 60 MHz design

# The paper's token-rate projections (§A.2) and what they were computed from (docs/accelerator.md)
PROJECTIONS = {
    "370M": dict(layers=24, real_d=1024, paper_d_used=512, paper_ms=16.08, paper_tok_s=62.0),
    "1.3B": dict(layers=24, real_d=2048, paper_d_used=1024, paper_ms=42.0, paper_tok_s=23.8),
}
RELEASED = {"370M": dict(d=1024, layers=24, vocab=32000), "1.3B": dict(d=2048, layers=24, vocab=32000),
            "2.7B": dict(d=2560, layers=32, vocab=32000)}


def board_power_w(d, cores=1):
    """The paper's active board power for a design (an input, not modelled): Table 5 by d for one
    core (the nearest measured d when d is not in the table), Table 4 by core count (linear between
    its rows) for several cores. Returns (watts, which figure was used)."""
    if cores == 1:
        nearest = min(TABLE5, key=lambda k: abs(k - d))
        note = "Table 5" + ("" if nearest == d else f" (nearest measured d={nearest})")
        return TABLE5[nearest]["active_w"], note
    counts = sorted(TABLE4)
    if cores in TABLE4:
        return TABLE4[cores]["active_w"], "Table 4"
    lo = max([c for c in counts if c < cores], default=counts[0])
    hi = min([c for c in counts if c > cores], default=counts[-1])
    if lo == hi:
        return TABLE4[lo]["active_w"], "Table 4 (edge row)"
    w = TABLE4[lo]["active_w"] + (TABLE4[hi]["active_w"] - TABLE4[lo]["active_w"]) * (cores - lo) / (hi - lo)
    return w, f"Table 4 (linear between {lo} and {hi} cores)"
