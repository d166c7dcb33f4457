"""Text: corpora and tokenizers (NumPy + tiktoken). Imports nothing else from mmf.

  storygrammar   the embedded story corpus: a seeded PCFG with an exactly known entropy
  corpus         Tiny Shakespeare (local routes first), splits, uint16 token files on disk
  tokenizer      byte-level BPE trained here (served by tiktoken) and a character tokenizer
"""
