"""
The project's words describe the software and what was measured, never the work that made it: no
file of the tree (README, results/, configs, code, tests, tools) numbers the sessions, issues or
items of its development, or speaks of reaching targets or of the speed of the hour.
"""
import re

from common import ROOT

SUFFIXES = {".py", ".md", ".yaml", ".yml", ".sh", ".txt", ".cfg", ".toml"}
# Not the project's words: training runs, generated data, caches.
SKIPPED = {"output", "__pycache__", "build", "dist"}

PROCESS_WORDS = re.compile(
    r"\bsessions? [0-9]|\bissues? [0-9]|\bitems? [0-9]|\bsession's\b"
    r"|target(?:s)? (?:was |were )?met|\b(?:fast|slow|quiet|busy) hour",
    re.IGNORECASE,
)


def _text_files():
    """The tree's text files: README, results/, configs, code, tests, tools."""
    files = []
    for path in sorted(ROOT.rglob("*")):
        parts = path.relative_to(ROOT).parts
        if any(p.startswith(".") or p in SKIPPED or p.endswith(".egg-info") for p in parts):
            continue
        if path.is_file() and path.suffix in SUFFIXES:
            files.append(path)
    return files


def test_the_pattern_finds_process_words():
    # Put together here, so that this file holds none of the words it looks for.
    numbered = [f"{word} {n}" for word, n in [("session", 21), ("Sessions", "3-5"), ("issue", 9),
                                             ("item", "4 of the list")]]
    phrases = [" ".join(("the 2x", "target", "met")), " ".join(("on a", "fast", "hour")),
               "session" + "'s loader"]
    for text in numbered + phrases:
        assert PROCESS_WORDS.search(text), text
    for text in ["ONNX Runtime sessions = {}", "an item of the batch", "issue #", "Hourly"]:
        assert not PROCESS_WORDS.search(text), text


def test_no_file_speaks_of_the_work_that_made_it():
    found = []
    for path in _text_files():
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if PROCESS_WORDS.search(line):
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert found == [], "\n".join(found)
