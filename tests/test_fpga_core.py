"""The core's stall rule and port model on hand-timed programs, and its refusal of bad programs/inputs.

Expected cycles are worked out by hand from the documented formulas (units.py, hardware.py): with
vector_lanes=4, a row-wise ADD of 8 elements takes ceil(8/4) + 2 = 4 cycles; at 60 MHz a DRAM access
costs ceil(35 ns * 60 MHz) = 3 cycles, so LDV of 8 float32 (16-byte header + 32 bytes = 48 accesses)
takes 48 * 3 + 2 = 146 cycles and SV of 8 (32 accesses) 32 * 3 + 2 = 98.
"""
import numpy as np
import pytest

from fpga_model import Hardware, SimulationError, simulate_block
from fpga_model.assembler import assemble
from fpga_model.core import Core
from fpga_model.dram import MATRIX, VECTOR, DramImage, DramObject, Region

HW = Hardware(clock_mhz=60, vector_lanes=4)


def make_core(src, execute=False):
    shared = Region("shared")
    shared.add(DramObject("a", VECTOR, 8, data=np.arange(8, dtype=np.float32)))
    shared.add(DramObject("b", VECTOR, 4, data=np.ones(4, np.float32)))
    layer = Region("layer0")
    layer.add(DramObject("w", MATRIX, 4, 8, beta=0.5, access_bytes=1,
                         data=np.zeros((4, 2), np.uint8)))
    image = DramImage(shared, [layer])
    rel, ab = image.symbols()
    prog = assemble(".entry main\n" + src, rel, ab, region_bytes=image.layer_size)
    return Core(prog, image, HW, execute=execute, dtype=np.float32)


def events(core):
    return core.run("main", layer=0).events


def test_dependent_instruction_waits_for_its_source():
    core = make_core("LDV r0, @@a\nADD r1, r0, r0")
    ev = events(core)
    assert (ev[0].issue, ev[0].end) == (0, 146)
    assert (ev[1].issue, ev[1].end) == (146, 150)            # RAW: r0's write lands at 146
    assert ev[1].stall_reason == "r0 not written yet"


def test_independent_instructions_overlap_and_complete_out_of_order():
    core = make_core("LDV r0, @@a\nADD r2, r1, r1")
    core.mark_written(1, 8)
    ev = events(core)
    assert ev[1].issue == 1 and ev[1].end == 5                # issued the next cycle, done long before LDV
    assert ev[1].end < ev[0].end


def test_busy_unit_stalls_the_pc():
    core = make_core("LDV r0, @@a\nLDV r1, @@a")
    ev = events(core)
    assert ev[1].issue == 146 and ev[1].stall_reason == "loadstore unit busy"


def test_write_after_read_waits_for_the_read_port():
    core = make_core("SV r1, @@a\nADD r1, r2, r2")
    core.mark_written(1, 8)
    core.mark_written(2, 8)
    ev = events(core)
    assert ev[0].end == 98
    assert ev[1].issue == 98 and ev[1].stall_reason == "r1 still being read"


def test_tmatmul_frees_its_source_after_the_copy_in():
    # TMATMUL 4x8: copy-in ceil(8/4) = 2 cycles; the next writer of r3 may issue then, not at the end
    core = make_core("TMATMUL r4, r3, @w\nNORM r3, r5")
    core.mark_written(3, 8, quantized=True)
    core.mark_written(5, 8)
    ev = events(core)
    assert ev[1].issue == 2
    # header 16 accesses + 4 rows * 2 bytes = 24 accesses * 3 cycles = 72; + copy-in 2 + fill 4 + scale 3
    assert ev[0].end - ev[0].issue == 72 + 2 + 4 + 3


@pytest.mark.parametrize("src, preset, message", [
    ("ADD r1, r0, r0", [], "read before anything was written"),
    ("ADD r1, r0, r2", [(0, 8), (2, 4)], "different lengths"),
    ("TMATMUL r1, r0, @w", [(0, 8)], "int8 codes from QUANT"),
    ("TMATMUL r1, r0, @w", [(0, 4, True)], "holds 4 codes"),
    ("LDV r1, @@0x80", [], "no DRAM object starts"),
    ("LDV r1, @w", [], "needs a vector"),
    ("SV r0, @@a", [(0, 4)], "holds 4 elements"),
])
def test_bad_programs_are_refused_with_the_line(src, preset, message):
    core = make_core(src)
    for p in preset:
        core.mark_written(*p)
    with pytest.raises(SimulationError) as e:
        core.run("main", layer=0)
    assert message in str(e.value) and "line 2" in str(e.value)


def test_unknown_entry_and_missing_layer_are_refused():
    core = make_core("LDV r0, @w")
    with pytest.raises(ValueError, match="no entry point"):
        core.run("nope")
    with pytest.raises(SimulationError, match="no DRAM object"):
        core.run("main", layer=3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(d=0, clock_mhz=60), "d must be a positive int"),
    (dict(d=512.0, clock_mhz=60), "d must be a positive int"),
    (dict(d=512, clock_mhz=0), "clock_mhz"),
    (dict(d=512, clock_mhz=60, ddr_bits=12), "ddr_bits"),
    (dict(d=512, clock_mhz=60, cores=0), "cores"),
    (dict(d=512, clock_mhz=60, intermediate_size=-4), "intermediate_size"),
    (dict(d=512, clock_mhz=60, vector_lanes=0), "vector_lanes"),
])
def test_simulate_block_rejects_bad_inputs(kwargs, message):
    with pytest.raises(ValueError, match=message):
        simulate_block(**kwargs)


def test_simulate_block_api():
    r = simulate_block(512, 60)
    assert r.cycles > 0 and r.milliseconds == pytest.approx(r.cycles / 60e3)
    # the same block at twice the clock: the DRAM round trip is fixed in ns, so the access costs
    # ceil(35 ns * 120 MHz) = 5 cycles instead of 3, and the time barely changes
    r2 = simulate_block(512, 120)
    assert r2.hw.access_cycles == 5
    assert r2.milliseconds == pytest.approx(r.milliseconds * 5 / 6, rel=0.02)


def test_breakdown_attributes_every_stall_cycle_to_a_unit():
    bd = simulate_block(512, 60).breakdown()
    units = ("tmatmul", "loadstore", "rms", "rowwise")
    assert sum(bd[u]["stalled_pc"] for u in units) == bd["pc"]["stall"] > 0
    assert bd["tmatmul"]["instructions"] == 7 and bd["loadstore"]["instructions"] == 14


def test_rowwise_and_rms_values():
    core = make_core("LDV r0, @@a\nEXP r1, r0\nDIV r2, r1, #2.0\nSIG r3, r0\nSUB r4, #1.0, r3\n"
                     "MUL r5, r0, r4\nNORM r6, r0\nSV r5, @@a", execute=True)
    a = np.arange(8, dtype=np.float32)
    core.run("main", layer=0)
    regs = [r.value for r in core.regs]
    sig = 1 / (1 + np.exp(-a))
    np.testing.assert_allclose(regs[2], np.exp(a) / 2, rtol=1e-6)
    np.testing.assert_allclose(regs[4], 1 - sig, rtol=1e-6)
    np.testing.assert_allclose(regs[6], a / np.sqrt(np.mean(a * a) + 1e-6), rtol=1e-6)
    np.testing.assert_allclose(core.image.shared.objects["a"].data, a * (1 - sig), rtol=1e-6)   # SV wrote it
