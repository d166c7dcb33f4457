"""mmf model (config + params) -> the accelerator's program and its DRAM image.

What runs where (per token):
  host  : embedding lookup (a row of model.embeddings.weight, float, E10) written to DRAM `x`
          through MMIO; after the head, reads the logits back and picks the next token.
  core  : `.entry block`, launched once per layer with that layer's base address: the whole E9 block
          (MLGRU E6 with the E7 lower bound, GLU E8), reading and writing the residual stream `x`
          and the layer's MLGRU state `state.h` in DRAM.
          `.entry head`, launched once: final RMSNorm and the ternary LM head (E10), in chunks of at
          most max(D, I) rows (a register holds at most that many elements), logits stored to DRAM.
The E7 lower bounds depend only on parameters, so the compiler evaluates them once (the softmax over
layers needs no hardware) and stores lb_l as a vector per layer; layer 0 gets zeros, for which
lb + (1 - lb) * f = f exactly, so one program serves every layer.

Every BitLinear (E4) compiles to: NORM, MUL by its gain, QUANT, TMATMUL (acc * beta / s). SiLU is
SIG + MUL. `1 - f` uses the immediate-operand extension. The instruction order is a schedule: the next
TMATMUL's input is prepared and the previous gate's row-wise work done while a TMATMUL streams.
Vectors are float32 in DRAM (4 bytes per element); ternary matrices use ternary.py's 2-bit code.
"""
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from mmf import MMfreeConfig
from mmf.layers.quant import weight_quant_int

from . import ternary
from .assembler import Program, assemble
from .dram import MATRIX, VECTOR, DramImage, DramObject, Region
from .hardware import Hardware

# ----------------------------------------------------------------------------
# the block program (E9 = MLGRU E6/E7 + GLU E8); r0 carries the residual stream.
# Schedule: every gain vector is loaded (Load/Store unit) while a TMATMUL streams, and the next
# TMATMUL's input is quantized while the previous one streams, so the PC mostly waits on TMATMUL.

BLOCK_ASM = """\
.entry block                          ; one E9 block; the host sets the layer base, then starts here
LDV     r0, @@x                       ; x (D): residual stream, from the host or the previous block
LDV     r2, @attn_norm.weight
NORM    r1, r0
MUL     r1, r1, r2                    ; xn = rms(x; attn_norm)                           (E1)
; --- MLGRU (E6): the f, i, g projections all read xn
LDV     r3, @attn.f_proj.norm.weight
{q_f}
TMATMUL r3, r2, @attn.f_proj.weight   ; a_f (D)
LDV     r4, @attn.i_proj.norm.weight
{q_i}
TMATMUL r4, r2, @attn.i_proj.weight   ; a_i (D)
LDV     r5, @attn.g_proj.norm.weight
{q_g}
SIG     r3, r3                        ; f = sigmoid(a_f)
LDV     r6, @lower_bound
SUB     r7, #1.0, r6
MUL     r7, r7, r3
ADD     r3, r6, r7                    ; f = lb + (1 - lb) f                               (E7)
TMATMUL r5, r2, @attn.g_proj.weight   ; a_g (D)
SIG     r6, r4
MUL     r4, r4, r6                    ; SiLU(a_i) = a_i sigmoid(a_i)
SUB     r6, #1.0, r3
MUL     r4, r4, r6                    ; i = SiLU(a_i) (1 - f)
LDV     r6, @state.h
MUL     r6, r3, r6
ADD     r6, r6, r4                    ; h = f h_prev + i                                  (E6)
SV      r6, @state.h
SIG     r3, r6
MUL     r6, r6, r3                    ; SiLU(h)
LDV     r3, @attn.g_norm.weight
LDV     r4, @attn.o_proj.norm.weight
LDV     r7, @mlp_norm.weight
NORM    r5, r5
MUL     r5, r5, r3                    ; rms(g; g_norm)
MUL     r5, r5, r6                    ; o' = rms(g; g_norm) SiLU(h)
{q_o}
TMATMUL r3, r5, @attn.o_proj.weight   ; MLGRU out (D)
LDV     r1, @mlp.gate_proj.norm.weight
LDV     r4, @mlp.down_proj.norm.weight        ; (I)
ADD     r0, r0, r3                    ; r = x + MLGRU(xn)                                 (E9)
; --- GLU (E8): one gate_proj (2I x D, one beta) stored as its gate and up halves
NORM    r2, r0
MUL     r2, r2, r7                    ; rn = rms(r; mlp_norm)
{q_gate}
TMATMUL r3, r2, @mlp.gate_proj.weight[gate]   ; gate (I)
TMATMUL r5, r2, @mlp.gate_proj.weight[up]     ; up (I)
SIG     r6, r3
MUL     r3, r3, r6                    ; SiLU(gate)
MUL     r3, r3, r5                    ; p = SiLU(gate) up (I)
{q_down}
TMATMUL r5, r3, @mlp.down_proj.weight         ; GLU out (D)
ADD     r0, r0, r5                    ; x' = r + GLU(rn)                                  (E9)
SV      r0, @@x
"""


def quantize_input(dst, src, gain):
    """E4's input side: dst = QUANT(rms(src) * gain), with the gain vector already in register `gain`."""
    return "\n".join([f"NORM    r{dst}, r{src}",
                      f"MUL     r{dst}, r{dst}, r{gain}",
                      f"QUANT   r{dst}, r{dst}                    ; int8 codes + scale s          (E2)"])


def block_source():
    return BLOCK_ASM.format(q_f=quantize_input(2, 1, 3), q_i=quantize_input(2, 1, 4),
                            q_g=quantize_input(2, 1, 5), q_o=quantize_input(5, 5, 4),
                            q_gate=quantize_input(2, 2, 1), q_down=quantize_input(3, 3, 4))


def head_source(num_chunks):
    lines = [".entry head                           ; final norm + ternary LM head (E10)",
             "LDV     r0, @@x",
             "NORM    r1, r0",
             "LDV     r2, @@model.norm.weight",
             "MUL     r1, r1, r2",
             "LDV     r2, @@lm_head.norm.weight",
             quantize_input(1, 1, 2)]
    for k in range(num_chunks):
        r = 2 + k % 2                                 # alternate so a chunk's SV overlaps the next stream
        lines += [f"TMATMUL r{r}, r1, @@lm_head.weight[{k}]",
                  f"SV      r{r}, @@logits[{k}]"]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------
# DRAM layout

LAYER_VECTORS = ("attn_norm.weight", "attn.f_proj.norm.weight", "attn.i_proj.norm.weight",
                 "attn.g_proj.norm.weight", "attn.o_proj.norm.weight", "attn.g_norm.weight",
                 "mlp_norm.weight", "mlp.gate_proj.norm.weight")
LAYER_MATRICES = ("attn.f_proj.weight", "attn.i_proj.weight", "attn.g_proj.weight", "attn.o_proj.weight")


def head_chunks(config):
    rows = max(config.hidden_size, config.intermediate_size)
    return [(k, min(rows, config.vocab_size - k)) for k in range(0, config.vocab_size, rows)]


def _matrix(name, W, access_bytes, rows=None, cols=None, beta=0.0):
    """A matrix object; W is a float [out, in] matrix (quantized here, E3) or None (layout only)."""
    if W is None:
        return DramObject(name, MATRIX, rows, cols, beta, access_bytes)
    Wt, beta = weight_quant_int(np.asarray(W))
    return DramObject(name, MATRIX, Wt.shape[0], Wt.shape[1], beta, access_bytes, ternary.pack(Wt, access_bytes))


def _split_matrix(names, W, access_bytes, rows, cols):
    """One tensor with one beta (E3) stored as row blocks, e.g. gate_proj's [gate | up] halves."""
    if W is None:
        return [DramObject(n, MATRIX, r1 - r0, cols, 0.0, access_bytes) for n, (r0, r1) in zip(names, rows)]
    Wt, beta = weight_quant_int(np.asarray(W))
    return [DramObject(n, MATRIX, r1 - r0, cols, beta, access_bytes, ternary.pack(Wt[r0:r1], access_bytes))
            for n, (r0, r1) in zip(names, rows)]


def _vector(name, v, length):
    data = None if v is None else np.asarray(v, dtype=np.float32).reshape(length).copy()
    return DramObject(name, VECTOR, length, data=data)


def build_image(config, params=None, access_bytes=1):
    """The DRAM image of a model (params=None: layout and sizes only, for timing)."""
    D, I, L = config.hidden_size, config.intermediate_size, config.num_layers
    P = params if params is not None else {}
    get = (lambda k: P[k]) if params is not None else (lambda k: None)
    if params is not None:
        from mmf.layers.mlgru import lower_bounds_forward
        lb = (lower_bounds_forward(np.asarray(P["model.lower_bounds"]))[0]   # in the model's dtype, as mmf
              if config.use_lower_bound else np.zeros((L, D)))
    layers = []
    for l in range(L):
        pre = f"model.layers.{l}."
        region = Region(f"layer{l}")
        for name in LAYER_VECTORS:
            region.add(_vector(name, get(pre + name), D))
        region.add(_vector("mlp.down_proj.norm.weight", get(pre + "mlp.down_proj.norm.weight"), I))
        region.add(_vector("lower_bound", None if params is None else (lb[l] if l > 0 else np.zeros(D)), D))
        region.add(_vector("state.h", None if params is None else np.zeros(D), D))
        for name in LAYER_MATRICES:
            region.add(_matrix(name, get(pre + name), access_bytes, D, D))
        for obj in _split_matrix(("mlp.gate_proj.weight[gate]", "mlp.gate_proj.weight[up]"),
                                 get(pre + "mlp.gate_proj.weight"), access_bytes, [(0, I), (I, 2 * I)], D):
            region.add(obj)
        region.add(_matrix("mlp.down_proj.weight", get(pre + "mlp.down_proj.weight"), access_bytes, D, I))
        layers.append(region)
    shared = Region("shared")
    shared.add(_vector("x", None if params is None else np.zeros(D), D))
    shared.add(_vector("model.norm.weight", get("model.norm.weight"), D))
    shared.add(_vector("lm_head.norm.weight", get("lm_head.norm.weight"), D))
    chunks = head_chunks(config)
    for obj in _split_matrix([f"lm_head.weight[{k}]" for k in range(len(chunks))], get("lm_head.weight"),
                             access_bytes, [(r0, r0 + n) for r0, n in chunks], D):
        shared.add(obj)
    for k, (_, n) in enumerate(chunks):
        shared.add(_vector(f"logits[{k}]", None if params is None else np.zeros(n), n))
    return DramImage(shared, layers)


# ----------------------------------------------------------------------------

@dataclass
class Compiled:
    config: MMfreeConfig
    source: str
    program: Program
    image: DramImage


def compile_model(config, params=None, hw=None):
    """Compile an mmf model (config + params) for the accelerator `hw` (default Hardware()).

    params=None builds the layout only (timing). Refuses configs the hardware cannot run."""
    if not isinstance(config, MMfreeConfig):
        raise TypeError(f"config must be an mmf.MMfreeConfig, got {type(config).__name__}")
    if config.weights != "ternary":
        raise ValueError(f"the accelerator runs ternary MMfree models only (2-bit weight codes); this "
                         f"model has weights={config.weights!r} (see the README's table of which tool "
                         "runs which model)")
    hw = hw or Hardware()
    if config.output_gate != "official":
        raise ValueError(f"the accelerator program implements the official output gate rms(g)*SiLU(h) "
                         f"only; this config has output_gate={config.output_gate!r}")
    if abs(config.rms_norm_eps - hw.rms_eps) > 1e-12:
        raise ValueError(f"the RMS unit's epsilon is {hw.rms_eps} but the model uses rms_norm_eps="
                         f"{config.rms_norm_eps}; build Hardware(rms_eps={config.rms_norm_eps})")
    if params is not None:
        missing = [k for k in _required_names(config) if k not in params]
        if missing:
            raise ValueError(f"params lack {len(missing)} tensors the program needs, e.g. {missing[:3]}")
    image = build_image(config, params, hw.access_bytes)
    source = block_source() + head_source(len(head_chunks(config)))
    rel, ab = image.symbols()
    program = assemble(source, rel, ab, region_bytes=image.layer_size, capacity=image.capacity,
                       rom_depth=hw.rom_depth)
    return Compiled(config, source, program, image)


def _required_names(config):
    names = ["model.embeddings.weight", "model.norm.weight", "lm_head.weight", "lm_head.norm.weight"]
    if config.use_lower_bound:
        names.append("model.lower_bounds")
    for l in range(config.num_layers):
        pre = f"model.layers.{l}."
        names += [pre + n for n in LAYER_VECTORS + LAYER_MATRICES]
        names += [pre + "mlp.gate_proj.weight", pre + "mlp.down_proj.weight", pre + "mlp.down_proj.norm.weight"]
    return names


@lru_cache(maxsize=64)
def compile_block_layout(d, intermediate_size, access_bytes, rom_depth=1024):
    """Layout-only compile of one block at width d (cached: the paper sweeps call it many times)."""
    config = MMfreeConfig(vocab_size=1, hidden_size=d, num_layers=1, intermediate_size=intermediate_size)
    return compile_model(config, None, Hardware(ddr_bits=8 * access_bytes, rom_depth=rom_depth))
