"""
The suite itself: a test defined twice in one module runs only as its second definition, so the
first is lost without a word.
"""
import ast
import textwrap

from common import ROOT


def _redefined_tests(source):
    """Test functions defined again in the same module or class, as 'name (line N)'."""
    tree = ast.parse(source)
    twice = []
    for scope in [tree] + [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)]:
        seen = set()
        for node in scope.body:
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test"):
                if node.name in seen:
                    twice.append(f"{node.name} (line {node.lineno})")
                seen.add(node.name)
    return twice


def test_no_test_is_defined_twice():
    found = {p.name: _redefined_tests(p.read_text()) for p in (ROOT / "tests").glob("*.py")}
    assert not {name: t for name, t in found.items() if t}


def test_a_test_defined_twice_is_found():
    source = textwrap.dedent(
        """
        def test_a():
            pass
        def test_a():
            pass
        class TestB:
            def test_c(self):
                pass
            def test_c(self):
                pass
        """
    )
    assert _redefined_tests(source) == ["test_a (line 4)", "test_c (line 9)"]
