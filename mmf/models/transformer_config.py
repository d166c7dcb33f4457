"""TransformerConfig: the shape of the paper's Transformer++ baseline (a Llama) and its 1-bit variants.

Field names follow Hugging Face's `LlamaConfig` where it has them (num_layers and num_heads are its
num_hidden_layers and num_attention_heads; every head has its own keys and values, no grouping).
"""
import math
from dataclasses import dataclass
from typing import ClassVar, Optional

from mmf.layers.quant import check_weights
from mmf.models.config import check_projection_output_norm, glu_intermediate_size


@dataclass
class TransformerConfig:
    """weights='float' is exactly a Llama (the paper's "reproduced Llama-2-style Transformer",
    Transformer++): pre-RMSNorm blocks, causal softmax attention with RoPE, SwiGLU MLP, untied LM head,
    no biases. weights='ternary' is BitNet b1.58 and weights='binary' is BitNet (2023): every attention
    and MLP projection becomes a BitLinear with its own RMSNorm (E4, docs/equations.md); the embedding
    and the LM head stay float, as in both BitNet papers. The block pre-norms stay in every variant
    (the b1.58 recipe notes drop them because each BitLinear normalises its input; here they are kept
    so the three variants differ in their weights only). ternary_qk=True also ternarizes the rotated
    queries and keys (the paper's "MatMul-free Transformer++", see mmf/layers/attention.py).

    intermediate_size=None applies the same rule as the MatMul-free model's GLU (E8):
    I = 256 * ceil(int(8 D / 3) / 256), e.g. D=1024 -> 2816.
    """
    arch: ClassVar[str] = "transformer"       # the architecture's name in checkpoints and on the command line
    vocab_size: int                           # V: token ids the embedding and the LM head know
    hidden_size: int                          # D: model width (q, k, v, o projections are D x D)
    num_layers: int                           # L: number of blocks (attention + SwiGLU MLP)
    num_heads: int                            # H: attention heads; each is D / H wide (must be even, for RoPE)
    intermediate_size: Optional[int] = None   # I: SwiGLU width; None -> the E8 rounding rule
    rms_norm_eps: float = 1e-6                # eps of the block norms and the final norm (BitLinear norms use 1e-6, E4)
    rope_theta: float = 10000.0               # RoPE base: pair k turns by pos * rope_theta^(-2k/hd)
    weights: str = "float"                    # projection weights: 'float' (Llama), 'ternary' (b1.58), 'binary' (BitNet)
    ternary_qk: bool = False                  # ternarize Q and K per token and head after RoPE (STE)
    max_position_embeddings: int = 2048       # longest context (prompt + generated): the KV cache / RoPE limit
    projection_output_norm: bool = False      # OneBit's parameter-free LayerNorm on every block projection's
                                              # output (mmf/layers/output_norm.py); compressed float models only

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "num_layers", "num_heads", "max_position_embeddings"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"TransformerConfig.{name} must be an int, got {type(value).__name__} ({value!r})")
            if value <= 0:
                raise ValueError(f"TransformerConfig.{name} must be positive, got {value}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"TransformerConfig.hidden_size={self.hidden_size} is not divisible by "
                             f"num_heads={self.num_heads}; pick num_heads dividing hidden_size")
        if (self.hidden_size // self.num_heads) % 2:
            raise ValueError(f"TransformerConfig: head width hidden_size / num_heads = "
                             f"{self.hidden_size // self.num_heads} is odd; RoPE rotates pairs, so choose "
                             "num_heads giving an even head width")
        if self.intermediate_size is None:
            self.intermediate_size = glu_intermediate_size(self.hidden_size)
        elif isinstance(self.intermediate_size, bool) or not isinstance(self.intermediate_size, int):
            raise TypeError(f"TransformerConfig.intermediate_size must be an int or None, "
                            f"got {type(self.intermediate_size).__name__}")
        elif self.intermediate_size <= 0:
            raise ValueError(f"TransformerConfig.intermediate_size must be positive, got {self.intermediate_size}")
        for name, lo, hi in (("rms_norm_eps", 0.0, 1.0), ("rope_theta", 1.0, math.inf)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo < float(value) < hi:
                raise ValueError(f"TransformerConfig.{name} must be a float in ({lo}, {hi}), got {value!r}")
            setattr(self, name, float(value))
        check_weights(self.weights, "TransformerConfig.weights")
        if not isinstance(self.ternary_qk, bool):
            raise TypeError(f"TransformerConfig.ternary_qk must be a bool, got {self.ternary_qk!r}")
        check_projection_output_norm(self, "TransformerConfig")

    @property
    def head_dim(self) -> int:
        """hd = D / H."""
        return self.hidden_size // self.num_heads
