"""Models: configurations, parameter tables keyed by checkpoint names, blocks and whole language
models built from `mmf.layers`, and generation. Models import layers; layers never import models.

  config               MMfreeConfig and the E8 rule for the GLU width
  params               state-dict names, shapes and initialisation
  block                E9   one MMfree block (MLGRU + GLU, each behind an RMSNorm and a residual)
  mmfree               E10  MMfreeLM: embedding, blocks, final norm, LM head
  transformer_config        TransformerConfig: the Transformer++ (Llama) baseline and its BitNet variants
  transformer_params        its parameters under Hugging Face Llama's state-dict names, and their init
  transformer_block         one Llama block: attention + SwiGLU, each behind an RMSNorm and a residual
  transformer               TransformerLM: embedding, blocks, final norm, float LM head; KV-cache decoding
  registry                  architecture names -> (config, model) classes; config <-> stored dict
  generate                  prefill once, then decode with the carried state (O(1) per token for MMfree)
"""
