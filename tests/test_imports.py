"""mmf runs on NumPy alone: importing it (and using it) pulls in neither numba nor torch, and no mmf
module imports a higher tier (kernels_numba, fpga_model) or matplotlib at module level."""
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


HIGHER_TIERS = ("kernels_numba", "numba", "llvmlite", "torch", "matplotlib", "fpga_model")

IMPORT_EVERY_SUBMODULE = """
import importlib, pkgutil, sys
{prelude}
import mmf
names = [m.name for m in pkgutil.walk_packages(mmf.__path__, "mmf.")]
assert len(names) > 20, names                  # the walk really found the package's modules
for name in names:
    importlib.import_module(name)
bad = [k for k in {tiers!r} if k in sys.modules]
assert not bad, f"importing mmf's modules imported {{bad}}"
"""


def run_import_check(prelude=""):
    code = IMPORT_EVERY_SUBMODULE.format(prelude=prelude, tiers=HIGHER_TIERS)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)


def test_no_mmf_module_imports_a_higher_tier_at_module_level():
    result = run_import_check()
    assert result.returncode == 0, result.stderr


def test_the_import_check_catches_a_module_level_import():
    # negative control: a module-level `import kernels_numba` anywhere in mmf must be caught
    result = run_import_check(prelude="import kernels_numba")
    assert result.returncode != 0 and "kernels_numba" in result.stderr


def test_backend_numba_still_reaches_the_kernels_by_name():
    code = ("import sys, mmf\n"
            "assert 'kernels_numba' not in sys.modules\n"
            "ops = mmf.backend.get_backend('numba')\n"
            "assert type(ops).__module__ == 'kernels_numba.backend', type(ops).__module__\n")
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
