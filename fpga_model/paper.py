"""python -m fpga_model.paper: the paper's FPGA tables beside the model, with errors.

    1. the two calibrated constants and the arithmetic that pins them
    2. Table 5 (runtime and the x64 burst projection, d = 512/1024/2048 at 60/54/52 MHz)
    3. a width the paper never built (d = 768), from the same program and DDR4 model
    4. Table 4's trends (1/8/16/26 cores: core latency flat, host -> DDR4 latency growing)
    5. the 370M and 1.3B token rates: the paper's stated figures, its own table applied correctly,
       and the model's whole-token figures (blocks + LM head + host transfers)
    6. the design-space sweep around the x64 projection and the roof each point hits
"""

from mmf import MMfreeConfig

from .accelerator import Accelerator
from .compiler import compile_block_layout
from .hardware import Hardware
from .memory import CALIBRATED, DDR4
from .paper_data import PROJECTIONS, RELEASED, TABLE4, TABLE4_CLOCK_MHZ, TABLE4_D, TABLE5, board_power_w
from .simulate import simulate_block
from .sweep import one_at_a_time


def _err(model, paper):
    return 100.0 * (model - paper) / paper


def weight_bytes(d, access_bytes=1):
    """Bytes of ternary weights one block streams (2-bit codes, rows padded to accesses)."""
    image = compile_block_layout(d, None, access_bytes).image
    return sum(o.payload_bytes for o in image.layers[0].objects.values() if o.kind == 2)


def calibration_rows():
    rows = []
    for d, t in TABLE5.items():
        cycles = t["runtime_ms"] * t["clock_mhz"] * 1e3
        nbytes = weight_bytes(d)
        rows.append(dict(d=d, clock_mhz=t["clock_mhz"], paper_cycles=cycles, weight_bytes=nbytes,
                         cycles_per_byte=cycles / nbytes,
                         model_cycles_per_access=DDR4().access_cycles(t["clock_mhz"])))
    return rows


def table5_rows():
    rows = []
    for d, t in TABLE5.items():
        r8 = simulate_block(d, t["clock_mhz"], ddr_bits=8)
        r512 = simulate_block(d, t["clock_mhz"], ddr_bits=512)
        rows.append(dict(d=d, clock_mhz=t["clock_mhz"], paper_ms=t["runtime_ms"], model_ms=r8.milliseconds,
                         err=_err(r8.milliseconds, t["runtime_ms"]), paper_burst_ms=t["burst_ms"],
                         model_burst_ms=r512.milliseconds, burst_err=_err(r512.milliseconds, t["burst_ms"]),
                         tmatmul_share=r8.tmatmul_share, cycles=r8.cycles))
    return rows


def table4_rows(d=TABLE4_D, clock_mhz=TABLE4_CLOCK_MHZ):
    ddr = DDR4()
    rows = []
    for cores, t in TABLE4.items():
        r = simulate_block(d, clock_mhz, ddr_bits=8, cores=cores)
        host = ddr.host_to_ddr_ms(4 * d, cores)
        rows.append(dict(cores=cores, per_channel=ddr.cores_per_channel(cores), paper_core_ms=t["core_ms"],
                         model_core_ms=r.milliseconds, core_err=_err(r.milliseconds, t["core_ms"]),
                         paper_ddr_ms=t["ddr_ms"], model_ddr_ms=host, ddr_err=_err(host, t["ddr_ms"]),
                         access_cycles=ddr.access_cycles(clock_mhz, 8, cores)))
    return rows


def projection_rows():
    """Token rates of the real 370M / 1.3B shapes: paper vs the paper's table applied correctly vs model."""
    rows = []
    for name, p in PROJECTIONS.items():
        shape = RELEASED[name]
        d, L = shape["d"], shape["layers"]
        clock = TABLE5[d]["clock_mhz"]
        table_ms = L * TABLE5[d]["burst_ms"]
        cfg = MMfreeConfig(vocab_size=shape["vocab"], hidden_size=d, num_layers=L)
        out = dict(name=name, d=d, layers=L, clock_mhz=clock, paper_ms=p["paper_ms"], paper_tok_s=p["paper_tok_s"],
                   paper_d_used=p["paper_d_used"], paper_slip_ms=L * TABLE5[p["paper_d_used"]]["burst_ms"],
                   table_ms=table_ms, table_tok_s=1e3 / table_ms)
        for bits in (8, 512):
            _, rep = Accelerator(cfg, None, Hardware(clock_mhz=clock, ddr_bits=bits)).step()
            watts, _note = board_power_w(d)
            out[f"blocks_ms_{bits}"] = sum(rep.block_cycles) / (clock * 1e3)
            out[f"token_ms_{bits}"] = rep.milliseconds
            out[f"head_ms_{bits}"] = rep.head_cycles / (clock * 1e3)
            out[f"host_ms_{bits}"] = rep.host_ms
            out[f"tok_s_{bits}"] = rep.tokens_per_s
            out[f"j_per_token_{bits}"] = rep.energy_j(watts)
        rows.append(out)
    return rows


# ----------------------------------------------------------------------------

def main():
    print("fpga_model vs the paper's FPGA appendix (Zhu et al., v7 App. A; docs/accelerator.md)\n")
    print("1. Calibrated constants (2 of at most 3); everything else follows from the program")
    for name, (value, why) in CALIBRATED.items():
        print(f"   {name:13s} = {value:10s} {why}")
    print("   Table 5 cycles / streamed weight bytes (2-bit codes, E8 GLU width):")
    for r in calibration_rows():
        print(f"     d={r['d']:5d} @ {r['clock_mhz']} MHz: {r['paper_cycles'] / 1e6:6.3f} M cycles / "
              f"{r['weight_bytes'] / 1e6:6.3f} MB = {r['cycles_per_byte']:.2f} cycles/byte "
              f"-> model ceil(35 ns x f) = {r['model_cycles_per_access']} cycles/access")
    print()
    print("2. Table 5 (one core, one block)")
    print("    d   clock |  runtime ms: paper   model   error | x64 burst ms: paper   model   error | TMATMUL share")
    for r in table5_rows():
        print(f"  {r['d']:5d} {r['clock_mhz']:3d} MHz |  {r['paper_ms']:16.2f} {r['model_ms']:7.2f} {r['err']:+6.1f}% |"
              f" {r['paper_burst_ms']:18.2f} {r['model_burst_ms']:7.3f} {r['burst_err']:+6.1f}% | {100 * r['tmatmul_share']:.1f}%")
    lanes = [simulate_block(2048, 52, 512, vector_lanes=v).milliseconds for v in (1, 16, 64, 2048)]
    print(f"   assumption check: the x64 rows need wide vector units too; d=2048 burst with vector_lanes ="
          f" 1/16/64/2048: {' / '.join(f'{t:.2f}' for t in lanes)} ms (default 64)")
    print()
    print("3. A width the paper did not build (same program, same DDR4 model; no table interpolation)")
    for clock in (60, 54):
        r8, r512 = simulate_block(768, clock), simulate_block(768, clock, 512)
        print(f"   d=768 (I={r8.intermediate_size}) @ {clock} MHz: {r8.cycles / 1e6:.3f} M cycles = {r8.milliseconds:.1f} ms;"
              f" x64 burst {r512.milliseconds:.3f} ms ({r8.dram_beats} DRAM accesses x {r8.hw.access_cycles} cycles)")
    print()
    print(f"4. Table 4 trends (d={TABLE4_D} core at {TABLE4_CLOCK_MHZ} MHz; cores spread over 4 DDR4 channels)")
    print("  cores per-ch | core ms: paper  model  error | host->DDR4 ms: paper  model  error | cycles/access")
    rows = table4_rows()
    for r in rows:
        print(f"  {r['cores']:5d} {r['per_channel']:6d} | {r['paper_core_ms']:14.2f} {r['model_core_ms']:6.2f} {r['core_err']:+6.1f}% |"
              f" {r['paper_ddr_ms']:20.2f} {r['model_ddr_ms']:6.2f} {r['ddr_err']:+6.1f}% | {r['access_cycles']}")
    core = [r["model_core_ms"] for r in rows]
    host = [r["model_ddr_ms"] for r in rows]
    print(f"   core latency flat: max/min = {max(core) / min(core):.3f};  host->DDR4 growing: "
          f"{' < '.join(f'{h:.2f}' for h in host)} ms (x2 per extra core on a channel, the paper's rule)")
    print()
    print("5. Token rates of the released shapes (L=24, V=32000; paper board power for energy)")
    for r in projection_rows():
        print(f"   {r['name']} (real d={r['d']}, {r['clock_mhz']} MHz):")
        print(f"     paper states        {r['paper_ms']:7.2f} ms/token  {r['paper_tok_s']:6.1f} tok/s   "
              f"= 24 x the d={r['paper_d_used']} burst row ({r['paper_slip_ms']:.2f} ms): the wrong row")
        print(f"     paper's table, d={r['d']:4d} {r['table_ms']:7.2f} ms/token  {r['table_tok_s']:6.1f} tok/s   "
              f"= 24 x {TABLE5[r['d']]['burst_ms']} ms")
        print(f"     model, 24 blocks     {r['blocks_ms_512']:7.2f} ms/token  {1e3 / r['blocks_ms_512']:6.1f} tok/s   "
              f"(x64 burst; error vs the correct table row {_err(r['blocks_ms_512'], r['table_ms']):+.1f}%)")
        print(f"     model, whole token   {r['token_ms_512']:7.2f} ms/token  {r['tok_s_512']:6.1f} tok/s   "
              f"(+ LM head {r['head_ms_512']:.2f} ms on the core, host MMIO {r['host_ms_512']:.2f} ms); "
              f"{r['j_per_token_512']:.2f} J/token")
        print(f"     model, as measured   {r['token_ms_8'] / 1e3:7.2f} s/token   {r['tok_s_8']:6.2f} tok/s   "
              f"(8-bit accesses); {r['j_per_token_8']:.1f} J/token")
    print("   Why the paper's numbers differ: the 370M projection used d=512 (the model has d=1024) and the")
    print("   1.3B projection used the d=1024 row (1.75 ms) instead of d=2048 (7.13 ms). With the right rows")
    print("   the paper's own table gives 23.8 tok/s for 370M and 5.8 tok/s for 1.3B, before the LM head and")
    print("   the host transfers, which the model adds; '1.3B at 23.8 tok/s and 13 W' does not follow.")
    print()
    print("6. Design-space sweep around the x64 projection (d=2048, 24 blocks; tokens/s of all cores)")
    names = {"ddr_bits": "DRAM bits", "tmatmul_lanes": "add lanes", "clock_mhz": "clock MHz", "cores": "cores"}
    for knob, rows in one_at_a_time().items():
        cells = [f"{r['lanes'] if knob == 'tmatmul_lanes' else r[knob]}: {r['total_tok_s']:.1f} ({r['bound']})"
                 for r in rows]
        print(f"   {names[knob]:10s} " + ", ".join(cells))
    print("   The measured design sits on the DDR4 latency roof (one 8-bit access in flight per ~35 ns): a")
    print("   faster clock does not help, wider accesses do until the add stage (compute) or the shared")
    print("   64-byte-per-3.3-ns channel caps it; more cores add throughput but cost a clock quantum of")
    print("   arbitration once two share a channel at 52 MHz. `python -m fpga_model.sweep` prints the roofs.")


if __name__ == "__main__":
    main()
