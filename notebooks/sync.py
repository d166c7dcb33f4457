"""Regenerates every notebook's `.ipynb` from its Jupytext source `NN_name.py`, or checks they agree.

    python notebooks/sync.py            # rewrite every notebooks/NN_*.ipynb from notebooks/NN_*.py
    python notebooks/sync.py --check    # exit 1, naming each notebook that is out of date or has outputs

The `.py` files (Jupytext "percent" format: `# %%` starts a code cell, `# %% [markdown]` a markdown
cell) are the sources a reviewer reads and diffs. The `.ipynb` files are what a learner opens; they are
committed without outputs and rebuilt from the sources by this script. Cell ids are derived from the
notebook's number and the cell's index (`nb03-c007`), and the notebook metadata is fixed, so rebuilding
an unchanged source rewrites the same bytes: a rebuild makes no diff.

The `.ipynb` metadata pairs it with its `.py` (`jupytext.formats`), so a learner who edits the notebook
in Jupyter with the Jupytext extension saves both; without the extension, edit the `.py` and run this
script. CI runs `--check` before it executes the notebooks.
"""
import argparse
import glob
import os
import sys

import jupytext
import nbformat

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_PATTERN = "[0-9][0-9]*_*.py"       # notebooks/NN_name.py (or NNb_name.py); this script and helpers do not match

# Fixed notebook metadata: what Jupyter needs to pick a kernel, and the Jupytext pairing. Nothing that
# depends on the machine or on the Jupytext version goes in, so the bytes are the same everywhere.
METADATA = {
    "jupytext": {"formats": "ipynb,py:percent"},
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
}


def cell_id(stem, index):
    """A cell id that depends only on the notebook and the cell's position: 'nb03-c007'."""
    number = stem.split("_", 1)[0]
    return f"nb{number}-c{index:03d}"


def notebook_from_source(py_path):
    """The .ipynb text (a string) that `py_path` defines: no outputs, deterministic ids and metadata."""
    stem = os.path.splitext(os.path.basename(py_path))[0]
    parsed = jupytext.read(py_path, fmt="py:percent")
    cells = []
    for index, cell in enumerate(parsed.cells):
        if cell.cell_type == "markdown":
            new = nbformat.v4.new_markdown_cell(cell.source)
        elif cell.cell_type == "code":
            new = nbformat.v4.new_code_cell(cell.source)
        elif cell.cell_type == "raw":
            new = nbformat.v4.new_raw_cell(cell.source)
        else:
            raise ValueError(f"{py_path}: cell {index} has unknown type {cell.cell_type!r}")
        new.id = cell_id(stem, index)
        cells.append(new)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=METADATA)
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"


def sources(folder=HERE):
    return sorted(glob.glob(os.path.join(folder, SOURCE_PATTERN)))


def problems_with(py_path):
    """Why the committed .ipynb next to `py_path` is not what the source defines ([] if it is)."""
    ipynb_path = os.path.splitext(py_path)[0] + ".ipynb"
    name = os.path.basename(ipynb_path)
    if not os.path.exists(ipynb_path):
        return [f"{name}: missing (run `python notebooks/sync.py`)"]
    with open(ipynb_path, encoding="utf-8") as f:
        committed = f.read()
    found = []
    try:
        nb = nbformat.reads(committed, as_version=4)
        with_outputs = [i for i, c in enumerate(nb.cells)
                        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count"))]
        if with_outputs:
            found.append(f"{name}: cells {with_outputs} have outputs (notebooks are committed without "
                         f"outputs; run `python notebooks/sync.py`)")
    except Exception as exc:  # a damaged file is also "out of date"
        found.append(f"{name}: not a readable notebook ({exc})")
    if committed != notebook_from_source(py_path):
        found.append(f"{name}: differs from {os.path.basename(py_path)} (edit the .py, then run "
                     f"`python notebooks/sync.py`)")
    return found


def orphans(folder=HERE):
    """Committed notebooks with no .py source (they would silently drift)."""
    have_source = {os.path.splitext(p)[0] for p in sources(folder)}
    return [f"{os.path.basename(p)}: no source {os.path.basename(os.path.splitext(p)[0])}.py"
            for p in sorted(glob.glob(os.path.join(folder, "*.ipynb")))
            if os.path.splitext(p)[0] not in have_source]


def main(argv=None, folder=HERE):
    """The command line; `folder` (the notebooks/ directory by default) lets tests run it on a copy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 if any .ipynb is out of date or has outputs")
    args = parser.parse_args(argv)
    paths = sources(folder)
    if not paths:
        print(f"no notebook sources matching {SOURCE_PATTERN} in {folder}", file=sys.stderr)
        return 1
    if args.check:
        found = [p for path in paths for p in problems_with(path)] + orphans(folder)
        for problem in found:
            print(problem, file=sys.stderr)
        if found:
            return 1
        print(f"{len(paths)} notebooks agree with their sources")
        return 0
    for path in paths:
        ipynb_path = os.path.splitext(path)[0] + ".ipynb"
        text = notebook_from_source(path)
        old = open(ipynb_path, encoding="utf-8").read() if os.path.exists(ipynb_path) else None
        if old != text:
            with open(ipynb_path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {os.path.relpath(ipynb_path)}")
    for problem in orphans(folder):
        print(problem, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
