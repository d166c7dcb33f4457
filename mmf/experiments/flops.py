"""Compute accounting, the same way for every architecture: training FLOPs and what they are made of.

The headline number is the convention of the scaling-law papers the MatMul-free paper follows (Kaplan et
al. 2020, "Scaling Laws for Neural Language Models"; Hoffmann et al. 2022), where every operation
counts alike whatever its precision:

    training FLOPs = 6 * N_matmul * tokens  +  attention term

  N_matmul   entries of every weight matrix that takes part in a matrix product: all projections and
             the LM head. Not the token embedding (a table lookup), not norm gains or the MLGRU's forget
             lower bounds (elementwise). A multiply-add is 2 FLOPs; forward is 1 multiply-add per entry
             and per token, backward 2 (one for the input gradient, one for the weight gradient): 6.
  attention  the products of queries with keys and of probabilities with values (Transformers only).
             A sequence of T tokens has T(T+1)/2 causal (query, key) pairs; each pair costs D
             multiply-adds in Q K^T and D in P V, per layer. Forward FLOPs per token:
             2 * 2 * D * (T+1)/2 * L = 2 L D (T+1), which is Kaplan et al.'s 2 n_layer n_ctx d_attn
             with the causal pairs counted exactly; training is 3x forward: 6 L D (T+1) per token.
  left out   elementwise work (norms, gates, the MLGRU recurrence, softmax, quantizers, the optimizer):
             O(D) per token and layer against O(D^2) for the products. The same rule for every
             architecture, which is what makes the counts comparable; at the smallest widths here
             it undercounts both sides by a few percent.

Beside it, the same products split into what a processor would execute (the MatMul-free claim):

  float weights    every multiply-add is a float multiply and a float add, 3 per entry and token
  ternary/binary   forward: int8 activations times weights in {-1, 0, +1} are additions only
  weights          (1 integer addition per entry; zeros could even be skipped, counted anyway);
                   backward: the input gradient (float gradient times ternary weights) is 1 float
                   addition per entry; the weight gradient (float gradient times int8 activations)
                   is 1 float multiply + 1 float add per entry
  attention        float multiplies and adds; with ternary Q and K the forward Q K^T is additions

so `float_mul + float_add + int_add` is at most `flops` (a ternary multiply-add is one addition here,
two FLOPs in the headline). Architectures are entries of MATMUL_TABLES: one function per architecture
that lists its weight matrices and their formats from the config alone.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmf.models.params import param_shapes
from mmf.models.rwkv4 import param_shapes as rwkv4_param_shapes
from mmf.models.transformer_params import transformer_param_shapes

QUANTIZED = ("ternary", "binary")


def _mmfree_matmuls(config) -> dict[str, tuple[int, str]]:
    """MatMul-free LM: the MLGRU's i, f, g, o projections, the GLU's gate and down projections and the
    LM head are BitLinears in config.weights (E4, E8, E10); the embedding is a lookup."""
    out = {}
    for name, shape in param_shapes(config).items():
        if len(shape) == 2 and name not in ("model.embeddings.weight", "model.lower_bounds"):
            out[name] = (shape[0] * shape[1], config.weights)
    return out


def _transformer_matmuls(config) -> dict[str, tuple[int, str]]:
    """Transformer++ / BitNet: q, k, v, o and the SwiGLU projections in config.weights; the LM head is
    float in every variant (as in both BitNet papers); the embedding is a lookup."""
    out = {}
    for name, shape in transformer_param_shapes(config).items():
        if len(shape) == 2 and name != "model.embed_tokens.weight":
            out[name] = (shape[0] * shape[1], "float" if name == "lm_head.weight" else config.weights)
    return out


def _rwkv4_matmuls(config) -> dict[str, tuple[int, str]]:
    """MatMul-free RWKV-4: the time-mixing key, value, receptance and output projections, the
    channel-mixing key, value and receptance projections and the head are BitLinears in config.weights;
    the embedding is a lookup (the WKV recurrence and the token shifts are elementwise)."""
    out = {}
    for name, shape in rwkv4_param_shapes(config).items():
        if len(shape) == 2 and name != "emb.weight":
            out[name] = (shape[0] * shape[1], config.weights)
    return out


def _transformer_attention(config) -> tuple[int, int, bool]:
    """(layers, width of the attention products, Q and K ternary?)."""
    return config.num_layers, config.hidden_size, bool(config.ternary_qk)


# arch -> (weight matrices and formats, attention (layers, width, ternary_qk) or None)
MATMUL_TABLES = {
    "mmfree": (_mmfree_matmuls, None),
    "transformer": (_transformer_matmuls, _transformer_attention),
    "rwkv4": (_rwkv4_matmuls, None),
}

# recurrent architectures: D-wide state vectors carried per layer from one token to the next
# (MMfree: the MLGRU's hidden state h; RWKV-4: the two token-shift inputs and the WKV numerator,
# denominator and running maximum)
STATE_VECTORS_PER_LAYER = {"mmfree": 1, "rwkv4": 5}


def _table(config):
    arch = type(config).arch
    if arch not in MATMUL_TABLES:
        raise ValueError(f"no compute accounting for architecture {arch!r}; add it to "
                         f"mmf.experiments.flops.MATMUL_TABLES (known: {', '.join(sorted(MATMUL_TABLES))})")
    return MATMUL_TABLES[arch]


def matmul_params(config) -> dict[str, int]:
    """{'float': entries, 'ternary': entries, 'binary': entries} of the weight matrices in products."""
    counts = {"float": 0, "ternary": 0, "binary": 0}
    for entries, fmt in _table(config)[0](config).values():
        counts[fmt] += entries
    return counts


def attention_pairs_per_token(config, context: int) -> float:
    """Multiply-adds per token of Q K^T (and, equally many, of P V), forward, all layers, when each
    sequence has `context` tokens: L * D * (context + 1) / 2 (the causal pairs, exactly). 0 without
    attention."""
    attn = _table(config)[1]
    if attn is None:
        return 0
    layers, width, _ = attn(config)
    return layers * width * (context + 1) / 2


@dataclass(frozen=True)
class Compute:
    """Training compute of one run (every field is a count for the whole run)."""
    flops: float            # the headline: 6 N_matmul tokens + attention, every operation alike
    flops_matmul: float     # 6 N_matmul tokens
    flops_attention: float  # 6 L D (T+1) tokens (0 without attention)
    float_mul: float        # the same products as executed: float multiplies,
    float_add: float        #   float additions,
    int_add: float          #   integer additions (int8 activations x ternary/binary weights)
    n_matmul: int           # N_matmul


def training_compute(config, tokens: int, context: int) -> Compute:
    """Compute of training `config` on `tokens` tokens in sequences of `context` tokens (module docstring)."""
    if tokens < 0 or context < 1:
        raise ValueError(f"need tokens >= 0 and context >= 1, got tokens={tokens}, context={context}")
    counts = matmul_params(config)
    n_float, n_quant = counts["float"], counts["ternary"] + counts["binary"]
    n = n_float + n_quant
    pairs = attention_pairs_per_token(config, context)          # multiply-adds per token in Q K^T
    attn = _table(config)[1]
    ternary_qk = attn is not None and attn(config)[2]
    # per token: float entries 3 multiply-adds; quantized: 1 int add (fwd), 1 float add (dX), 1 mul-add (dW)
    float_mul = 3 * n_float + n_quant
    float_add = 3 * n_float + 2 * n_quant
    int_add = n_quant
    # attention: Q K^T and P V, forward 1 + backward 2 multiply-adds per pair each
    qk_fwd_int = pairs if ternary_qk else 0
    float_mul += 6 * pairs - qk_fwd_int
    float_add += 6 * pairs - qk_fwd_int
    int_add += qk_fwd_int
    return Compute(flops=float(tokens * (6 * n + 12 * pairs)), flops_matmul=float(6 * n * tokens),
                   flops_attention=float(12 * pairs * tokens), float_mul=float(float_mul * tokens),
                   float_add=float(float_add * tokens), int_add=float(int_add * tokens), n_matmul=n)


@dataclass(frozen=True)
class InferenceOps:
    """What one generated token costs (forward only, batch 1), at a given context length."""
    int_add: float          # integer additions (ternary/binary products, ternary Q K^T)
    float_mul: float        # float multiplies (float products, attention)
    float_add: float        # float additions
    weight_bytes: float     # weight bytes read: products' weights (2-bit ternary/1-bit binary codes,
                            #   16-bit floats) + one 16-bit embedding row
    state_bytes: float      # carried state read and written: KV cache (read at every step, 16-bit) for
                            #   attention; the recurrent state (read + written, 16-bit) otherwise


BITS_PER_WEIGHT = {"float": 16, "ternary": 2, "binary": 1}   # as stored for inference: fp16, mmf's 2-bit
                                                             # packed ternary codes, 1-bit signs
STATE_BYTES = 2                                              # fp16 activations / KV entries


def inference_ops(config, context: int) -> InferenceOps:
    """Per-token inference operations and bytes at `context` tokens of context (the KV cache length;
    the recurrent models carry a fixed state instead)."""
    if context < 1:
        raise ValueError(f"context must be >= 1, got {context}")
    matmuls, attn = _table(config)
    n_float = n_quant = 0
    weight_bits = 0
    for entries, fmt in matmuls(config).values():
        weight_bits += entries * BITS_PER_WEIGHT[fmt]
        if fmt == "float":
            n_float += entries
        else:
            n_quant += entries
    D = config.hidden_size
    weight_bytes = weight_bits / 8 + D * STATE_BYTES                 # + the embedding row
    int_add, float_mul, float_add = float(n_quant), float(n_float), float(n_float)
    if attn is not None:
        layers, width, ternary_qk = attn(config)
        qk = layers * width * context                                # one query against `context` keys
        pv = layers * width * context
        if ternary_qk:
            int_add += qk
        else:
            float_mul, float_add = float_mul + qk, float_add + qk
        float_mul, float_add = float_mul + pv, float_add + pv
        state_bytes = 2 * layers * width * context * STATE_BYTES     # K and V of every earlier token
    else:
        vectors = STATE_VECTORS_PER_LAYER[type(config).arch]
        state_bytes = 2 * vectors * config.num_layers * D * STATE_BYTES   # read and written per layer
    return InferenceOps(int_add=int_add, float_mul=float_mul, float_add=float_add,
                        weight_bytes=weight_bytes, state_bytes=float(state_bytes))
