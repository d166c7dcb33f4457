"""One core: program counter with the paper's stall rule, instruction ROM, register router, the
register file (8 vectors, one read port and one write port each) and the four functional units with
simple out-of-order completion (paper App. A, Fig. 5; docs/accelerator.md).

Timing is a scoreboard, one step per instruction (not per element or per weight):
  * the PC fetches from the ROM section the host launched and issues at most one instruction per
    cycle, in program order; the register router hands it to its unit and claims the register ports
    it needs (the compiler names the registers; the router only grants ports);
  * it stalls while the instruction's unit is busy, or while any register it needs is busy: a
    source whose write port is held (the value is not there yet) or whose read port is held by
    another instruction; a destination whose write port or read port is held (WAW / WAR);
  * once issued, the instruction holds its unit and its ports until it completes; instructions on
    different units overlap and may complete out of order. TMATMUL releases its source's read port
    after copying the codes into its own buffer, so the next input can be prepared while it streams.
  * the Load/Store and TMATMUL units each have their own request path to the DRAM router; both are
    latency-bound (one access in flight), so they can stream at the same time (memory.py).

The same walk executes the instructions on real values when the core has a DRAM image with values
(functional simulation). Bad programs or inputs raise SimulationError naming the instruction.
"""
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import units
from .dram import MATRIX, VECTOR
from .isa import LOADSTORE, NUM_REGISTERS, ROWWISE, UNITS


class SimulationError(ValueError):
    """A program or input the core cannot run; the message names the instruction and the reason."""

    def __init__(self, ins, reason):
        where = f"line {ins.line} ({ins.text!r})" if ins is not None and ins.line else (ins.op if ins else "core")
        super().__init__(f"{where}: {reason}")


@dataclass
class Register:
    length: int = 0                    # elements held (0 = never written)
    quantized: bool = False            # holds int8 codes + scale (written by QUANT)
    value: Optional[np.ndarray] = None
    scale: Optional[float] = None
    read_free: int = 0                 # cycle at which the read port is free again
    write_free: int = 0                # cycle at which the pending write (if any) has landed
    reader_unit: str = ""              # unit of the instruction holding the read port
    writer_unit: str = ""              # unit of the instruction holding the write port


@dataclass
class Event:
    """One instruction's life in the core (for reports and the timeline plot)."""
    index: int
    op: str
    unit: str
    ready: int                         # cycle the PC reached it
    issue: int                         # cycle it left the router
    end: int                           # cycle its result landed
    stall_reason: str                  # what held the PC (empty if nothing)
    beats: int = 0                     # DRAM accesses it made
    layer: Optional[int] = None
    stall_unit: str = ""               # the unit whose instruction held that resource

    @property
    def stall(self):
        return self.issue - self.ready


@dataclass
class Trace:
    events: list = field(default_factory=list)
    cycles: int = 0                    # completion of the last instruction (core start -> ready)


class Core:
    """Runs ROM sections. `image` is a DramImage (with or without values); `hw` a Hardware."""

    def __init__(self, program, image, hw, execute=None, dtype=np.float64):
        self.program, self.image, self.hw = program, image, hw
        self.execute = (image.has_values if execute is None else execute)
        self.dtype = np.dtype(dtype)
        self._weights = {}             # decoded ternary matrices, by object identity
        self.reset()

    def reset(self):
        self.regs = [Register() for _ in range(NUM_REGISTERS)]

    # ------------------------------------------------------------------------
    def run(self, entry, layer=None, start=0):
        """Run one ROM section from cycle `start` (the host's launch). Register contents persist
        between launches (the hardware does not clear them), port/unit timings restart."""
        section = self.program.section(entry)
        trace = Trace()
        unit_free = {u: start for u in UNITS}
        for r in self.regs:
            r.read_free = r.write_free = start
        pc_ready, last_end = start, start
        base = self.program.entries[entry][0]
        for k, ins in enumerate(section):
            shape = self._check(ins, layer)
            duration, read_hold, beats = self._cycles(ins, shape)
            # --- stall rule: every resource the instruction needs must be free ---
            waits = {"pc": pc_ready, f"{ins.unit} unit busy": unit_free[ins.unit]}
            holder = {f"{ins.unit} unit busy": ins.unit}                 # reason -> unit holding it
            for r in ins.reads():
                reg = self.regs[r]
                waits[f"r{r} not written yet"], holder[f"r{r} not written yet"] = reg.write_free, reg.writer_unit
                waits[f"r{r} read port busy"], holder[f"r{r} read port busy"] = reg.read_free, reg.reader_unit
            for r in ins.writes():
                reg = self.regs[r]
                waits[f"r{r} write port busy"], holder[f"r{r} write port busy"] = reg.write_free, reg.writer_unit
                if r not in ins.reads():
                    waits[f"r{r} still being read"], holder[f"r{r} still being read"] = reg.read_free, reg.reader_unit
            issue = max(waits.values())
            reason = max(waits, key=waits.get) if issue > pc_ready else ""
            end = issue + duration
            # --- hold the unit and the ports ---
            unit_free[ins.unit] = end
            for r in ins.reads():
                self.regs[r].read_free = issue + (read_hold if read_hold is not None else duration)
                self.regs[r].reader_unit = ins.unit
            for r in ins.writes():
                self.regs[r].write_free = end
                self.regs[r].writer_unit = ins.unit
            pc_ready = issue + self.hw.issue
            last_end = max(last_end, end)
            trace.events.append(Event(base + k, ins.op, ins.unit, waits["pc"], issue, end, reason, beats, layer,
                                      holder.get(reason, "")))
            if self.execute:
                self._execute(ins, layer, shape)
            elif ins.rd is not None:                                  # timing only: track shapes
                self.regs[ins.rd].length, self.regs[ins.rd].quantized = shape[0], ins.op == "QUANT"
        trace.cycles = last_end - start
        return trace

    # ------------------------------------------------------------------------
    def _reg(self, ins, r, want_quantized=False):
        reg = self.regs[r]
        if reg.length == 0:
            raise SimulationError(ins, f"r{r} is read before anything was written to it")
        if reg.quantized != want_quantized:
            need = "int8 codes from QUANT" if want_quantized else "a float vector"
            raise SimulationError(ins, f"r{r} must hold {need} for {ins.op}")
        return reg

    def _object(self, ins, layer, kind):
        obj = self.image.resolve(ins.addr, ins.absolute, layer)
        space = "absolute" if ins.absolute else f"layer {layer}"
        if obj is None:
            raise SimulationError(ins, f"no DRAM object starts at {space} address {ins.addr}")
        if obj.kind != kind:
            raise SimulationError(ins, f"{ins.op} needs a {'vector' if kind == VECTOR else 'ternary matrix'} "
                                       f"but {obj.name!r} at {space} address {ins.addr} is not one")
        return obj

    def _check(self, ins, layer):
        """Validate operands; return the result's (length, object) for timing and execution."""
        op = ins.op
        if op == "LDV":
            obj = self._object(ins, layer, VECTOR)
            return obj.rows, obj
        if op == "SV":
            obj = self._object(ins, layer, VECTOR)
            reg = self._reg(ins, ins.ra)
            if reg.length != obj.rows:
                raise SimulationError(ins, f"r{ins.ra} holds {reg.length} elements but {obj.name!r} has {obj.rows}")
            return obj.rows, obj
        if op == "TMATMUL":
            obj = self._object(ins, layer, MATRIX)
            reg = self._reg(ins, ins.ra, want_quantized=True)
            if reg.length != obj.cols:
                raise SimulationError(ins, f"{obj.name!r} is {obj.rows}x{obj.cols} but r{ins.ra} holds "
                                           f"{reg.length} codes")
            return obj.rows, obj
        lengths = {self._reg(ins, r).length for r in ins.reads()}
        if len(lengths) != 1:
            raise SimulationError(ins, f"{op} operands have different lengths {sorted(lengths)}")
        return lengths.pop(), None

    def _cycles(self, ins, shape):
        n, obj = shape
        hw = self.hw
        if ins.unit == ROWWISE:
            return units.rowwise_cycles(ins.op, n, hw), None, 0
        if ins.op == "NORM":
            return units.norm_cycles(n, hw), None, 0
        if ins.op == "QUANT":
            return units.quant_cycles(n, hw), None, 0
        if ins.unit == LOADSTORE:
            load = ins.op == "LDV"
            beats = units.transfer_beats(4 * n + (16 if load else 0), hw)
            return units.load_store_cycles(n, hw, load), None, beats
        total, copy_in, beats = units.tmatmul_cycles(obj.rows, obj.cols, hw)
        return total, copy_in, beats

    # ------------------------------------------------------------------------
    def _execute(self, ins, layer, shape):
        n, obj = shape
        op, dt = ins.op, self.dtype
        if op == "SV":
            obj.data = self.regs[ins.ra].value.astype(obj.data.dtype if obj.data is not None else dt)
            return
        scale, quantized = None, False
        if op == "LDV":
            if obj.data is None:
                raise SimulationError(ins, f"{obj.name!r} holds no values (a timing-only image)")
            value = obj.data.astype(dt)
        elif op == "TMATMUL":
            src = self.regs[ins.ra]
            W = self._weights.get(id(obj))
            if W is None:
                W = self._weights[id(obj)] = obj.weights()
            value = units.tmatmul_value(W, src.value, src.scale, obj.beta, dt)
        elif op == "NORM":
            value = units.norm_value(self.regs[ins.ra].value, self.hw.rms_eps)
        elif op == "QUANT":
            value, scale = units.quant_value(self.regs[ins.ra].value)
            quantized = True
        else:
            a = ins.imm if ins.imm_slot == "ra" else self.regs[ins.ra].value
            b = None if op in ("EXP", "SIG") else (ins.imm if ins.imm_slot == "rb" else self.regs[ins.rb].value)
            value = units.rowwise_value(op, a, b, dt)
        rd = self.regs[ins.rd]
        rd.value, rd.scale, rd.quantized, rd.length = value, scale, quantized, n

    def mark_written(self, r, length, quantized=False):
        """Timing-only runs: pretend register r holds `length` elements (for hand-written programs)."""
        reg = self.regs[r]
        reg.length, reg.quantized = length, quantized
