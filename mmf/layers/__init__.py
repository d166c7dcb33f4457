"""Layers: one equation (or one small family of them) per file, each a forward/backward pair with
an explicit cache. Layers import NumPy, `mmf.checks` and `mmf.backend` only -- never a model.

  quant        E2, E3   int8 absmax activations, absmean ternary weights (fake-quant and integer)
  rmsnorm      E1       RMSNorm
  bitlinear    E4, E5   norm -> quantize -> product, with the straight-through estimator
  activations           sigmoid, SiLU and their derivatives
  recurrence   E6       the elementwise linear recurrence h_t = f_t * h_{t-1} + c_t (step, scan)
  mlgru        E6, E7   the MLGRU token mixer and the per-layer lower bounds of its forget gate
  glu          E8       the GLU channel mixer
  loss         E11      softmax cross-entropy
  linear                plain float linear, and `projection`: a plain linear or a BitLinear by its parameters
  rope                  rotary position embeddings (Hugging Face Llama convention), forward and backward
  attention             causal multi-head softmax attention with RoPE, a KV cache, optional ternary Q and K
  swiglu                the Llama MLP: gate, up and down projections (E8's GLU with two separate halves)
  layernorm             LayerNorm (gain and bias), RWKV-4's block norm
  output_norm           OneBit's parameter-free LayerNorm on a projection's output, and the backend view
                        that puts it after every block projection (compressed float models)
  wkv          R2       RWKV-4's WKV recurrence in the stable running-max form (step, scan, backward)
  rwkv4_mixing R1,R3,R4 RWKV-4's token shift, time mixing (around WKV) and channel mixing, on BitLinears

No eager imports here: `mmf.backend` imports some layers and some layers import the backend.
"""
