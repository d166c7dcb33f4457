"""The repository cites only itself: no pointers into design notes that live outside it (the project's
own references are docs/equations.md and docs/accelerator.md)."""
import os
import re

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# spelled in pieces so this file does not match itself
OUTSIDE = re.compile("|".join(["SP" + "EC", "paper" + "-notes", "peers" + r"\.md"]))
SKIP_DIRS = {".git", "runs", "out", "__pycache__", ".ipynb_checkpoints", ".pytest_cache", "cache"}
TEXT_ENDINGS = (".py", ".md", ".ipynb", ".txt", ".toml", ".cfg", ".json", ".sh", ".yml", ".yaml", "run")


def outside_citations(root):
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
        for name in files:
            if not name.endswith(TEXT_ENDINGS):
                continue
            path = os.path.join(folder, name)
            try:
                text = open(path, encoding="utf-8").read()
            except (UnicodeDecodeError, OSError):
                continue
            for number, line in enumerate(text.splitlines(), 1):
                if OUTSIDE.search(line):
                    found.append(f"{os.path.relpath(path, root)}:{number}: {line.strip()[:100]}")
    return found


def test_no_citation_points_outside_the_repository():
    found = outside_citations(REPO)
    assert not found, "cite docs/equations.md or docs/accelerator.md instead:\n" + "\n".join(found)


def test_the_scan_finds_a_planted_citation(tmp_path):
    (tmp_path / "mmf").mkdir()
    (tmp_path / "mmf" / "x.py").write_text('"""BitLinear (' + "SP" + 'EC §3)."""\n')
    (tmp_path / "notes.md").write_text("see " + "paper" + "-notes §6\n")
    (tmp_path / "clean.py").write_text("# docs/equations.md, E4\n")
    found = outside_citations(str(tmp_path))
    assert len(found) == 2 and any("x.py:1" in f for f in found) and any("notes.md:1" in f for f in found)
