"""mmf: a from-scratch NumPy reference of MatMul-free language models (Zhu et al., 2024).

Import map (the layout is the architecture; each subpackage's docstring lists its files):
  layers/     E1-E8, E11  one equation per file, forward/backward with explicit caches
  models/     E9, E10     configs, parameter tables keyed by checkpoint names, models, generation
  training/               AdamW, checkpoints, the training loop
  text/                   corpora and tokenizers
  compression/            post-training 1-bit compression of a float model (RTN, BiLLM, OneBit)
  interop/                the Hugging Face format of the released models, both ways (from_pretrained,
                          save_pretrained; safetensors/ml_dtypes/tokenizers imported only when used)
  backend                 the switch between this reference and kernels_numba
  gradcheck               finite-difference checks (python -m mmf.gradcheck)
  loading                 mmf.load(path): any checkpoint back as its model
  train, sample, export, compress
                          the command lines (python -m mmf.train, mmf.sample, mmf.export, mmf.compress)
  cli                     how every command line reports a mistake (one line, exit code 2; --debug)
  atomic                  write-then-rename files, and removing the temp files of killed writers
  threads                 how long idle BLAS threads spin (set here, before NumPy loads OpenBLAS)
mmf imports NumPy only.
"""
from mmf.threads import quiet_blas_threads

quiet_blas_threads()                 # before anything imports NumPy: OpenBLAS reads it when it loads

from mmf.models.config import MMfreeConfig
from mmf.models.mmfree import MMfreeLM
from mmf.models.rwkv4 import RWKV4Config, RWKV4LM
from mmf.models.transformer_config import TransformerConfig
from mmf.models.transformer import TransformerLM
from mmf.loading import load

__all__ = ["MMfreeConfig", "MMfreeLM", "RWKV4Config", "RWKV4LM", "TransformerConfig", "TransformerLM", "load"]
