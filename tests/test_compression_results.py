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
    methods = {r["method"] for r in read_table(CSV)}
    assert {"float", "rtn-ternary", "rtn-binary", "billm", "onebit-nmf", "onebit", "qat-ternary",
            "qat-binary", "qat-from-float-binary"} <= methods
    for r in read_table(CSV):
        assert r["bits_per_char"] > 0 and r["bits_per_weight"] >= 1
