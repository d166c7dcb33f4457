"""Interop: the Hugging Face format of the released MatMul-free checkpoints (`HGRNBitForCausalLM`,
model_type `hgrn_bit`), both ways. Load ridger/MMfreeLM-370M/-1.3B/-2.7B on a CPU; export a model
trained here for the official GPU package. Imports NumPy only at module level; `safetensors`,
`ml_dtypes` and the optional `tokenizers` are imported inside the functions that need them.

  hf_config        config.json (HGRNBitConfig) <-> MMfreeConfig: honoured, ignored and refused fields
  safetensors_io   .safetensors files and sharded directories: validated headers, one tensor at a time
                   through a memory map; atomic writes, BF16 by round-to-nearest-even
  hf_tokenizer     the released tokenizer.json (via `tokenizers`), and mmf's BPE exported as one
  pretrained       from_pretrained / save_pretrained: a directory <-> an MMfreeLM
"""
