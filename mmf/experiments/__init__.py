"""Experiments: grids of training runs and what they measure. Imports training, models and text.

  runner        a resumable grid of named runs, one folder and checkpoint each, and the CSV of results
  lr_sweep      python -m mmf.train --lr_sweep=...: one run per learning rate, the best picked
  baselines     MMfree beside Transformer++, BitNet b1.58, binary BitNet and ternary-QK: a learning-rate
                sweep, two seeds at each best rate, the results table (python -m mmf.experiments.baselines)
  decode_cost   per-token decoding time and carried-state bytes against context length, MMfree beside
                Transformer++ with its KV cache (python -m mmf.experiments.decode_cost)
  flops         compute accounting: training FLOPs (6 N_matmul tokens + attention) and their split into
                float multiplies, float adds and integer additions; per-token inference operations
  fit           power laws of loss against compute (NumPy least squares), bootstrap bands, crossings
  energy        energy per generated token: Horowitz 45 nm operation energies, DRAM bytes, the FPGA model
  scaling       the scaling study: architectures x sizes, resumable (python -m mmf.scaling)
"""
