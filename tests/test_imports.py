"""mmf runs on NumPy alone: importing it (and using it) pulls in neither numba nor torch."""
import subprocess
import sys


def test_mmf_imports_with_numpy_alone():
    code = ("import sys, numpy as np, mmf, mmf.gradcheck, mmf.training.adamw\n"
            "m = mmf.MMfreeLM(mmf.MMfreeConfig(vocab_size=8, hidden_size=4, num_layers=1))\n"
            "m.loss_and_grads(np.zeros((1, 3), int), np.ones((1, 3), int))\n"
            "bad = [k for k in ('numba', 'torch', 'llvmlite', 'tiktoken', 'matplotlib') if k in sys.modules]\n"
            "assert not bad, bad\n")
    subprocess.run([sys.executable, "-c", code], check=True)
