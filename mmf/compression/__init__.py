"""Post-training compression of a trained float model to ~1 bit per weight, and its evaluation.

The road the rest of mmf does not take: train in float, squeeze the weights afterwards (the other road,
quantization-aware training from the start, is `mmf.train --weights=ternary|binary`). Every method
compresses the block projections (`compressible_weights`); the token embedding and the LM head stay
float, as BiLLM and OneBit do. A compressed model is an ordinary `weights="float"` model whose block
weights were replaced by their reconstructions, so forward, generate, checkpoints and `mmf.load` work
unchanged; what was done (method, bits/weight) is stored in the checkpoint's `extra["compression"]`.
OneBit's whole layer (`onebit-ln`) adds a parameter-free LayerNorm after every block projection: the
model's config then says `projection_output_norm=True` (mmf/layers/output_norm.py).

Files:
  common       which weights are compressed, bits/weight bookkeeping, refusing non-float models
  calibration  a backend that records BitLinear inputs -> per-layer Hessians H = 2 X^T X / n
  rtn          round-to-nearest: absmean ternary and sign binary, per tensor or per output channel
  billm        BiLLM-style: Hessian-salient columns with residual binarization, split binarization of
               the rest at a searched break point, GPTQ/OBC error compensation block by block
  onebit       OneBit-style SVID: W ~ sign(W) * (a b^T) from a rank-1 SVD or NMF of |W| (its output
               LayerNorm is a model option: mmf/layers/output_norm.py)
  distill      OneBit's knowledge distillation: logits KL + hidden-state MSE, STE through the sign
  evaluation   validation loss with float or int8 (E2) activations
Command line: `python -m mmf.compress` (mmf/compress.py).
"""
