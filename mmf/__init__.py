"""mmf: a from-scratch NumPy reference of MatMul-free language models (Zhu et al., 2024).

Import map (the layout is the architecture):
  quant, rmsnorm, bitlinear            E1-E5  quantizers, norm, ternary BitLinear + STE
  recurrence, mlgru, glu, block        E6-E9  token mixer, channel mixer, block
  params, model                        E10    state-dict names, MMfreeLM
  loss, adamw                          E11    cross-entropy, optimizer
  backend                              the switch between this reference and kernels_numba
  gradcheck                            finite-difference checks (python -m mmf.gradcheck)
mmf imports NumPy only.
"""
from .config import MMfreeConfig
from .model import MMfreeLM

__all__ = ["MMfreeConfig", "MMfreeLM"]
