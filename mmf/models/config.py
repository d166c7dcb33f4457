"""MMfreeConfig: the shape of a MatMul-free language model (docs/equations.md).

Field names follow the official `HGRNBitConfig` so a released config maps onto this one.
"""
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

from mmf.layers.quant import check_weights


def glu_intermediate_size(hidden_size: int, hidden_ratio=4) -> int:
    """E8 rule: I = 256 * ceil(int(D * r * 2/3) / 256) with r = hidden_ratio (4 unless a released
    config says otherwise); D=1024 -> 2816, D=2048 -> 5632."""
    return 256 * math.ceil(int(hidden_size * hidden_ratio * 2 / 3) / 256)


def check_projection_output_norm(config, where: str):
    """projection_output_norm is a bool, and only float models carry it: the quantized engines and the
    exporters do not implement OneBit's output norm, so a quantized model with it would run wrongly."""
    value = config.projection_output_norm
    if not isinstance(value, bool):
        raise TypeError(f"{where}.projection_output_norm must be a bool, got {value!r}")
    if value and config.weights != "float":
        raise ValueError(f"{where}.projection_output_norm=True needs weights='float' (OneBit's compressed "
                         f"models are float models), got weights={config.weights!r}; drop the output norm "
                         "or use float weights")


@dataclass
class MMfreeConfig:
    arch: ClassVar[str] = "mmfree"            # the architecture's name in checkpoints and on the command line
    vocab_size: int                           # V: number of token ids the embedding and LM head know
    hidden_size: int                          # D: model width (every MLGRU projection is D x D)
    num_layers: int                           # L: number of blocks (MLGRU token mixer + GLU channel mixer)
    intermediate_size: Optional[int] = None   # I: GLU width; None -> the official E8 rounding rule
    rms_norm_eps: float = 1e-6                # eps of the block norms and g_norm (BitLinear norms always use 1e-6, E4)
    use_lower_bound: bool = True              # E7: learnable forget-gate lower bounds rising with depth
    weights: str = "ternary"                  # every BitLinear's weight format: 'ternary' (E3), 'binary' (E3b), 'float'
    # E6 output gate: "official" o' = rms(g; g_norm) * SiLU(h), what the released checkpoints compute;
    # "paper" o' = sigmoid(g) * h, the paper's first version (for comparison; the Numba engine and the
    # FPGA model run the official gate only). docs/equations.md, E6, lists all four published versions.
    output_gate: str = "official"
    # OneBit (Xu et al. 2024): a LayerNorm without parameters on every block projection's output
    # (mmf/layers/output_norm.py). Only a model compressed by `python -m mmf.compress --methods=onebit-ln`
    # has it; it stores nothing and needs weights='float' (no quantized tool implements it).
    projection_output_norm: bool = False

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"MMfreeConfig.{name} must be an int, got {type(value).__name__} ({value!r})")
            if value <= 0:
                raise ValueError(f"MMfreeConfig.{name} must be positive, got {value}")
        if self.intermediate_size is None:
            self.intermediate_size = glu_intermediate_size(self.hidden_size)
        elif isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int):
            raise TypeError(f"MMfreeConfig.intermediate_size must be an int or None, "
                            f"got {type(self.intermediate_size).__name__}")
        elif self.intermediate_size <= 0:
            raise ValueError(f"MMfreeConfig.intermediate_size must be positive, got {self.intermediate_size}")
        if not isinstance(self.rms_norm_eps, (int, float)) or isinstance(self.rms_norm_eps, bool) \
                or not (0 < float(self.rms_norm_eps) < 1):
            raise ValueError(f"MMfreeConfig.rms_norm_eps must be a float in (0, 1), got {self.rms_norm_eps!r}")
        self.rms_norm_eps = float(self.rms_norm_eps)
        if not isinstance(self.use_lower_bound, bool):
            raise TypeError(f"MMfreeConfig.use_lower_bound must be a bool, got {self.use_lower_bound!r}")
        check_weights(self.weights, "MMfreeConfig.weights")
        if self.output_gate not in ("official", "paper"):
            raise ValueError(f"MMfreeConfig.output_gate must be 'official' (the released models' "
                             f"rms(g)*SiLU(h)) or 'paper' (sigmoid(g)*h), got {self.output_gate!r}")
        check_projection_output_norm(self, "MMfreeConfig")
