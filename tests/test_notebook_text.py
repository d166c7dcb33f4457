"""Numbers in the notebooks' prose cannot go stale.

A number a markdown cell quotes (a decimal, or an integer with a unit: "4.47M", "15 minutes", "7 instructions")
must be one of:
  * checked by the notebook itself: the same value is a literal on an `assert` line of one of its code cells,
    so executing the notebook (CI does, in smoke mode) fails when the text and the computation part ways;
  * a number from the paper that `fpga_model/paper_data.py` records (Tables 4 and 5, the projections);
  * a constant listed below with the reason it cannot change (a definition, a target, a value to try).
Numbers that come out of a run are not written in markdown at all: cells print them, or format them into
text with IPython's Markdown display, so they are always the executed values.
"""
import glob
import json
import os
import re

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOKS = sorted(glob.glob(os.path.join(REPO, "notebooks", "[0-9][0-9]*_*.ipynb")))

UNITS = (r"(?:ms|s|sec|seconds?|min|minutes?|hours?|%|×|x|M|k|K|B|KB|MB|GB|KiB|MiB|GiB|W|J|mJ|MHz|GHz|ns|"
         r"tok/s|tokens/s|instructions?|cycles?|params|parameters|bits/char|nats)")
QUOTED = re.compile(
    r"(?<![\w.^{\-])(\d+\.\d+(?:[eE][-+]?\d+)?|\d+[eE][-+]?\d+)(?!\w|\.\d)"      # 0.627, 1e-6, 4e-3
    r"|(?<![\w.^{])(\d[\d,]*)\s?~?\s?" + UNITS + r"(?![\w/])(?!\s*\d)")         # 15 minutes, 5M, 6x
LITERAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w.])")

# Every notebook: the released model's name.
EVERYWHERE = {"370": "the released 370M model (a name, from the paper)"}
CONSTANTS = {
    "01": {"1.5": "round(W/beta) reaches ±2 at |W| = 1.5 beta: a definition",
           "0.02": "the official initialisation's standard deviation (docs/equations.md)"},
    "02": {"0.999": "a forget gate for the reader to try"},
    "03": {"2.6": "the project's target for this preset (README)", "15": "the project's time budget (README)",
           "4e-3": "the paper's learning rate at 370M", "3e-4": "the paper's Transformer++ learning rate"},
    "04": {"0.1": "OpenBLAS's idle threads spin about that long (bench.alternating_blocks)",
           "16": "32-bit floats against 2-bit weights; 16 float32 lanes per AVX-512 FMA: definitions"},
    "05": {"99": "the paper's TMATMUL share", "64": "512-bit over 8-bit accesses: the paper's projection factor",
           "3.3": "one DDR4-2400 burst: 8 beats at 2.4 GT/s (fpga_model/memory.py)",
           "32": "the released vocabulary (32k) and the 32 tokens the cell generates",
           "360": "AMD's published TDP of the EPYC 9654, the stated power source"},
    "06": {"3e-4": "the paper's Transformer++ learning rate", "4e-3": "the paper's MMfree learning rate at 370M",
           "2": "counts in the text (K and V, two seeds), not measurements"},
    "06b": {v: "the paper's Table 1 average accuracies (MatMul-free RWKV-4 and MMfree, 370M and 1.3B)"
            for v in ("40.0", "40.3", "45.5", "46.2")},
    "07": {"0.03": "Horowitz (ISSCC 2014, 45 nm): int8 add, pJ", "0.4": "Horowitz: fp16 add, pJ",
           "1.1": "Horowitz: fp16 multiply, pJ", "1.3": "Horowitz: DRAM nJ per 64-bit access, low end",
           "2.6": "Horowitz: DRAM nJ per 64-bit access, high end", "8": "16-bit over 2-bit weights: a ratio of definitions"},
    "08": {"1.58": "log2 3 bits: a definition", "1.1": "the bits/weight the BiLLM paper reports"},
}


def paper_numbers():
    from fpga_model import paper_data
    values = set()
    for table in (paper_data.TABLE4, paper_data.TABLE5, paper_data.PROJECTIONS):
        for row in table.values():
            values.update(float(v) for v in row.values())
    values.update(float(k) for k in paper_data.TABLE5)
    return values


def cells_of(path):
    with open(path, encoding="utf-8") as f:
        return [(c["cell_type"], "".join(c["source"])) for c in json.load(f)["cells"]]


def quoted_numbers(markdown):
    prose = re.sub(r"`[^`]*`", " ", markdown)                       # inline code quotes code, not results
    return [m.group(1) or m.group(2) for m in QUOTED.finditer(prose)]


def asserted_values(cells):
    values = set()
    for kind, source in cells:
        if kind == "code":
            for line in source.splitlines():
                if re.match(r"\s*assert\b", line):
                    values.update(float(v) for v in LITERAL.findall(line.split("#")[0]))
    return values


def stale_numbers(number, cells, paper=frozenset()):
    """The quoted numbers of a notebook's markdown that nothing checks: [(cell index, number)]."""
    allowed = {**EVERYWHERE, **CONSTANTS.get(number, {})}
    checked = asserted_values(cells) | set(paper)
    found = []
    for index, (kind, source) in enumerate(cells):
        if kind != "markdown":
            continue
        for text in quoted_numbers(source):
            value = float(text.replace(",", ""))
            if text not in allowed and value not in checked:
                found.append((index, text))
    return found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[os.path.basename(p).split("_")[0] for p in NOTEBOOKS])
def test_every_number_in_the_prose_is_checked_or_constant(path):
    number = os.path.basename(path).split("_")[0]          # "06", "06b", ...
    stale = stale_numbers(number, cells_of(path), paper_numbers())
    assert not stale, (f"{os.path.basename(path)}: markdown quotes numbers nothing checks {stale}; print them "
                       f"from a cell, assert them, or phrase the text without them")


def test_a_stale_number_is_caught():
    # negative controls: the texts this check was written for
    cells = [("markdown", "A relative error of ~0.4–0.5 per matrix is large."),
             ("code", "print(rel_err)  # 0.627 in the output")]
    assert stale_numbers("01", cells) == [(0, "0.4"), (0, "0.5")]
    cells = [("markdown", "trains the ~5M-parameter preset for about 15 minutes; about 7 instructions")]
    assert [n for _, n in stale_numbers("04", cells)] == ["5", "15", "7"]


def test_an_asserted_number_passes_and_a_changed_one_fails():
    text = ("markdown", "the expected sparsity is about 0.31.")
    assert quoted_numbers(text[1]) == ["0.31"]
    assert stale_numbers("99", [text, ("code", "assert round(p, 2) == 0.31")]) == []
    assert stale_numbers("99", [text, ("code", "assert round(p, 2) == 0.32")]) == [(0, "0.31")]
    assert stale_numbers("99", [text, ("code", "print(0.31)")]) == [(0, "0.31")]   # printed is not checked
