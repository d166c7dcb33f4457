"""The README's compression table is docs/results/compression.csv (written by `python -m mmf.compress`),
row for row, and it holds every row the experiment promises."""
import os

from mmf.compress import markdown_table, read_table

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSV = os.path.join(ROOT, "docs", "results", "compression.csv")


def test_readme_table_is_the_committed_csv():
    rows = read_table(CSV)
    with open(os.path.join(ROOT, "README.md")) as f:
        readme = f.read()
    assert markdown_table(rows) in readme
    with open(os.path.join(ROOT, "docs", "results", "compression.md")) as f:
        assert f.read() == markdown_table(rows)


def test_the_table_has_every_promised_row():
    rows = read_table(CSV)
    methods = {r["method"] for r in rows}
    assert {"float", "rtn-ternary", "rtn-binary", "billm", "onebit-nmf", "onebit", "onebit-nmf-ln", "onebit-ln",
            "qat-ternary", "qat-binary", "qat-from-float-binary", "qat-from-float-ternary"} <= methods
    # both architectures; two float models each, and two runs of every method that trains or samples
    ptq = ("float", "rtn-ternary", "rtn-binary", "billm", "onebit-nmf", "onebit", "onebit-nmf-ln", "onebit-ln")
    for model in ("mmfree", "transformer"):
        for method in ptq:
            assert {r["float_seed"] for r in rows if r["model"] == model and r["method"] == method} == {"0", "1"}, \
                (model, method)
        assert len({r["seed"] for r in rows if r["model"] == model and r["method"] == "billm"}) == 2
    for model in ("mmfree", "transformer"):
        for method in ("qat-ternary", "qat-binary", "qat-from-float-binary", "qat-from-float-ternary"):
            assert len([r for r in rows if r["model"] == model and r["method"] == method]) == 2, (model, method)
    for r in read_table(CSV):
        assert r["bits_per_char"] > 0 and r["bits_per_weight"] >= 1
