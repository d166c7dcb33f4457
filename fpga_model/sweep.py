"""Design-space sweep (DRAM access width, TMATMUL lanes, clock, cores) and the roofline each design
hits. python -m fpga_model.sweep prints it for the 1.3B shape (d=2048, L=24).

Roofline of the TMATMUL unit, in ternary adds per second per core (one add per weight):
  * latency roof   one access in flight: 4 * access_bytes weights per access / (cycles per access / f)
  * compute roof   the add stage's width: weights_per_cycle * f
  * channel roof   the DDR4 bus moves one 64-byte BL8 burst per 3.33 ns whatever the access uses;
                   an access of access_bytes carries 4 * access_bytes adds, so the operational
                   intensity is 4 * access_bytes / bus_bytes_per_access adds per bus byte, and the
                   roof is intensity * 19.2 GB/s / (cores on the channel)
The design runs at the lowest roof (minus the block's non-TMATMUL work); `bound` names it.
"""
import itertools
import math

from .paper_data import board_power_w
from .simulate import simulate_block


def roofs(hw, d=None):
    """{"latency", "compute", "channel"} adds/s per core, "intensity" adds per bus byte, and the bound."""
    period_s = 1e-6 / hw.clock_mhz
    per_access = 4 * hw.access_bytes                                  # weights in one access
    k = hw.ddr.cores_per_channel(hw.cores)
    bus_bytes = hw.ddr.bus_bytes * math.ceil(hw.access_bytes / hw.ddr.bus_bytes)
    out = {
        "latency": per_access / (hw.access_cycles * period_s),          # with this many cores' contention
        "compute": hw.weights_per_cycle / period_s,
        "channel": per_access / bus_bytes * hw.ddr.channel_bytes_per_s() / k,
        "intensity": per_access / bus_bytes,
    }
    out["bound"] = min(("latency", "compute", "channel"), key=out.get)
    return out


def evaluate(d, clock_mhz, ddr_bits, cores=1, tmatmul_lanes=None, layers=24, **hardware):
    """One design point: block time, tokens/s (L x block, per core and all cores), J/token, roofs."""
    r = simulate_block(d, clock_mhz, ddr_bits, cores, tmatmul_lanes=tmatmul_lanes, **hardware)
    bd = r.breakdown()
    weights = sum(e.beats for e in r.trace.events if e.op == "TMATMUL") * 4 * r.hw.access_bytes
    token_ms = layers * r.milliseconds
    watts, _ = board_power_w(d, cores)
    rf = roofs(r.hw, d)
    return dict(d=d, clock_mhz=clock_mhz, ddr_bits=ddr_bits, cores=cores,
                lanes=r.hw.weights_per_cycle, block_ms=r.milliseconds, token_ms=token_ms,
                tok_s=1e3 / token_ms, total_tok_s=cores * 1e3 / token_ms,
                j_per_token=watts * token_ms / 1e3 / cores,
                achieved=weights / (bd["tmatmul"]["busy"] / (clock_mhz * 1e6)),
                access_cycles=r.hw.access_cycles, **rf)


def sweep(d=2048, clocks=(52,), widths=(8, 512), lanes=(None,), cores=(1,), layers=24):
    """Every combination of the given knobs; lanes None = the add stage keeps pace with one access."""
    return [evaluate(d, c, w, n, l, layers) for c, w, l, n in itertools.product(clocks, widths, lanes, cores)]


def one_at_a_time(d=2048, base=dict(clock_mhz=52, ddr_bits=512, tmatmul_lanes=None, cores=1), layers=24):
    """Vary one knob at a time around `base` (the paper's x64 projection at d=2048): {knob: rows}."""
    knobs = {"ddr_bits": (8, 32, 128, 512, 2048), "tmatmul_lanes": (16, 64, 256, 1024, 4096),
             "clock_mhz": (52, 100, 200, 300), "cores": (1, 4, 8, 16, 26)}
    out = {}
    for knob, values in knobs.items():
        rows = []
        for v in values:
            point = {**base, knob: v}
            rows.append(evaluate(d, point["clock_mhz"], point["ddr_bits"], point["cores"],
                                 point["tmatmul_lanes"], layers))
        out[knob] = rows
    return out


def main():
    print("Design-space sweep, 1.3B shape (d=2048, L=24 blocks; LM head and host not included).")
    print("Base point: the paper's x64 projection (52 MHz, 512-bit accesses, add stage = 256 weights/cycle, 1 core);")
    print("each table varies one knob. Roofs in ternary adds/s per core.")
    for knob, rows in one_at_a_time().items():
        print(f"\n  {knob:13s}| block ms  tok/s/core  tok/s all  J/token | cyc/acc  bound     latency   compute   channel  achieved")
        for r in rows:
            value = r["lanes"] if knob == "tmatmul_lanes" else r[knob]
            print(f"  {value:13d}| {r['block_ms']:8.3f} {r['tok_s']:11.2f} {r['total_tok_s']:10.1f} {r['j_per_token']:8.3f} |"
                  f" {r['access_cycles']:7d}  {r['bound']:8s} {r['latency']:.2e}  {r['compute']:.2e}  {r['channel']:.2e}"
                  f"  {r['achieved']:.2e}")


if __name__ == "__main__":
    main()
