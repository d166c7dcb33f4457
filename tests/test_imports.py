"""mmf runs on NumPy alone: importing it (and using it) pulls in neither numba nor torch."""
import os
import subprocess
import sys

F32_CHECKPOINT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "official-hf", "tiny_float32")


def test_mmf_imports_with_numpy_alone():
    code = ("import sys, numpy as np, mmf, mmf.gradcheck, mmf.training.adamw\n"
            "m = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=8, hidden_size=4, num_layers=1))\n"
            "m.loss_and_grads(np.zeros((1, 3), int), np.ones((1, 3), int))\n"
            "bad = [k for k in ('numba', 'torch', 'llvmlite', 'tiktoken', 'matplotlib') if k in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_hf_interop_imports_safetensors_ml_dtypes_and_tokenizers_only_when_used():
    # an F32 checkpoint is read with NumPy's memory map alone; BF16 needs ml_dtypes, writing needs
    # safetensors, tokenizer.json needs tokenizers: each is imported inside the function that uses it
    code = ("import sys, numpy as np, mmf\n"
            "import mmf.interop.pretrained, mmf.interop.hf_tokenizer, mmf.interop.safetensors_io\n"
            f"m = mmf.MMfreeLM.from_pretrained({F32_CHECKPOINT!r})\n"
            "m.forward(np.zeros((1, 3), int))\n"
            "bad = [k for k in ('safetensors', 'ml_dtypes', 'tokenizers', 'numba', 'torch', 'tiktoken')\n"
            "       if k in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
