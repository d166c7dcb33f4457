"""The per-token driver: what the host and the core do for one token, on real values or timing only.

One token (paper App. A.2 "how a token is processed", extended to the whole model):
  1. host: x = embedding row of the token (E10), written to DRAM `x` over MMIO (memory.py);
  2. core: `block` launched L times, layer l's base address set before each launch; each launch
     reads x and the layer's MLGRU state from DRAM and writes both back;
  3. core: `head` once: final RMSNorm + ternary LM head, logits stored to DRAM;
  4. host: reads the V logits back over MMIO (same per-word cost as writes: an assumption) and takes
     the argmax (greedy decoding).
Time per token = host transfers + the core's cycles / clock. Launch handshakes are not modelled
(the paper gives no figure for them).
"""
from dataclasses import dataclass, field

import numpy as np

from mmf import MMfreeConfig
from mmf.models.generate import check_finite_logits
from mmf.models.registry import require

from .compiler import compile_model
from .core import Core
from .hardware import Hardware
from .report import unit_breakdown


@dataclass
class TokenReport:
    """Cycles and time of one token on the accelerator."""
    block_cycles: list                          # one entry per layer
    head_cycles: int
    host_ms: float                              # host -> DDR (x) + DDR -> host (logits)
    clock_mhz: float
    traces: list = field(default_factory=list)  # core traces: L blocks then the head

    @property
    def cycles(self):
        return int(sum(self.block_cycles) + self.head_cycles)

    @property
    def core_ms(self):
        return self.cycles / (self.clock_mhz * 1e3)

    @property
    def milliseconds(self):
        return self.core_ms + self.host_ms

    @property
    def tokens_per_s(self):
        return 1e3 / self.milliseconds

    def energy_j(self, watts):
        """Energy per token at a board power (W); the paper's figures are in paper.py."""
        return watts * self.milliseconds / 1e3

    def breakdown(self):
        """Per-unit busy cycles and PC stalls summed over the token's launches."""
        total = None
        for t in self.traces:
            b = unit_breakdown(t)
            if total is None:
                total = b
                continue
            for unit, row in b.items():
                for k, v in row.items():
                    total[unit][k] = total[unit][k] + v
        return total


class Accelerator:
    """An mmf model compiled onto the accelerator.

    Accelerator(config, params, hw)  -> runs on values (functional + timing)
    Accelerator(config, None, hw)    -> timing only (layout without weights)
    """

    def __init__(self, config, params=None, hw=None):
        if not isinstance(config, MMfreeConfig):
            raise TypeError(f"config must be an mmf.MMfreeConfig, got {type(config).__name__}")
        self.config, self.params, self.hw = config, params, hw or Hardware()
        self.compiled = compile_model(config, params, self.hw)
        self.image = self.compiled.image
        self.core = Core(self.compiled.program, self.image, self.hw, execute=params is not None,
                         dtype=np.float32)
        self._embeddings = None if params is None else np.asarray(params["model.embeddings.weight"], np.float32)

    @classmethod
    def from_model(cls, model, hw=None):
        """From a model (e.g. `mmf.load(path)`): MMfree architecture with ternary weights only."""
        require(model, "fpga_model.Accelerator", {("mmfree", "ternary")})
        return cls(model.config, dict(model.params), hw)

    # ------------------------------------------------------------------------
    def reset_state(self):
        """Zero every layer's MLGRU state in DRAM (start of a new sequence)."""
        for region in self.image.layers:
            h = region.objects["state.h"]
            if h.data is not None:
                h.data = np.zeros_like(h.data)

    def step(self, token_id=None):
        """Run one token. Returns (logits (V,) float32 or None when timing only, TokenReport)."""
        cfg, hw = self.config, self.hw
        x = self.image.shared.objects["x"]
        if self._embeddings is not None:
            if not isinstance(token_id, (int, np.integer)) or not 0 <= int(token_id) < cfg.vocab_size:
                raise ValueError(f"token_id must be an int in [0, {cfg.vocab_size}), got {token_id!r}")
            x.data = self._embeddings[int(token_id)].copy()           # host: embedding lookup (E10)
        host_ms = hw.ddr.host_to_ddr_ms(4 * cfg.hidden_size, hw.cores) \
            + hw.ddr.host_to_ddr_ms(4 * cfg.vocab_size, hw.cores)
        traces, block_cycles = [], []
        for l in range(cfg.num_layers):
            t = self.core.run("block", layer=l)
            traces.append(t)
            block_cycles.append(t.cycles)
        head = self.core.run("head")
        traces.append(head)
        report = TokenReport(block_cycles, head.cycles, host_ms, hw.clock_mhz, traces)
        if self._embeddings is None:
            return None, report
        chunks = [o for name, o in self.image.shared.objects.items() if name.startswith("logits[")]
        return np.concatenate([c.data for c in chunks]), report

    def generate(self, prompt_ids, max_new_tokens):
        """Greedy decoding of one sequence: prefill the prompt token by token (the recurrence needs
        nothing else), then feed back the argmax. Returns (all token ids, list of TokenReport)."""
        if self._embeddings is None:
            raise ValueError("generate() needs params: build the Accelerator with the model's weights")
        ids = [int(t) for t in np.asarray(prompt_ids).reshape(-1)]
        if not ids:
            raise ValueError("prompt_ids must hold at least one token id")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        self.reset_state()
        reports, logits = [], None
        for t in ids:
            logits, r = self.step(t)
            reports.append(r)
        for _ in range(max_new_tokens):
            check_finite_logits(logits[None, :], "Accelerator.generate")   # argmax(NaN) would be token 0
            ids.append(int(np.argmax(logits)))
            logits, r = self.step(ids[-1])
            reports.append(r)
        return ids, reports

    def logits(self, ids):
        """Logits (T, V) for a sequence fed token by token from a zero state (for comparisons)."""
        self.reset_state()
        return np.stack([self.step(int(t))[0] for t in np.asarray(ids).reshape(-1)])
