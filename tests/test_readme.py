"""The README is a runnable contract: its commands are the ones CI runs, and the numbers it prints
as expected output are recomputed here from the code (not copied from a run of it)."""
import os
import re

import pytest

from mmf.text.corpus import prepare
from mmf.training.trainer import PRESETS, TrainConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def readme():
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_two_fresh_machine_commands(readme):
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    main_job, tests = blocks[0], blocks[1]
    assert main_job.startswith("python3 -m venv .venv") and "pip install -r requirements.txt" in main_job
    assert main_job.endswith("python -m mmf.train --preset=tiny") and "tiny" in PRESETS
    assert tests.endswith("python -m pytest -q")
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        ci = f.read()
    assert "python -m pytest -q" in ci and "requirements.txt" in ci and "requirements-dev.txt" in tests


def test_main_job_data_line_matches_the_corpus(readme, tmp_path):
    """README's expected 'data ...' line: token counts, vocabulary, bytes/token and the entropy floor."""
    cfg = TrainConfig(**PRESETS["tiny"])
    ds = prepare(cfg.corpus, cfg.tokenizer, cfg.vocab_size, out_dir=str(tmp_path), seed=cfg.data_seed,
                 story_bytes=cfg.story_bytes, val_fraction=cfg.val_fraction, progress=False)
    m = ds.meta
    line = next(l for l in readme.splitlines() if l.startswith("data stories"))
    assert f"{m['train_tokens']:,} train / {m['val_tokens']:,} val tokens" in line
    assert f"vocab {m['vocab_size']}" in line
    assert f"entropy floor {m['val_floor_nats_per_token']:.4f} nats/token ({m['val_floor_bits_per_byte']:.4f} bits/byte)" in line
    assert f"floor {m['val_floor_nats_per_token']:.4f}" in readme.split("## Measured")[1]


def test_gradcheck_summary_line(readme, gradcheck_results, rwkv4_gradcheck_results):
    n = len(gradcheck_results) + len(rwkv4_gradcheck_results)     # what python -m mmf.gradcheck runs
    assert f"`{n} passed, 0 failed`" in readme
