"""
The layout's rules, one test per row of ARCHITECTURE.md's table. Every import form is resolved to
the module it imports: ``import a.b`` to ``a.b``; ``from a import b`` to ``a.b`` when ``a/b`` is a
module of the tree, else to ``a``; ``from .. import b`` to the parent package's ``b`` the same way.
"""
import ast

import pytest

from common import ROOT

PACKAGE = ROOT / "gaussian_retina"
CORE = ["config.py", "data", "modeling", "evaluation"]
WINGS = ["shelves", "baselines", "engine", "inference", "predict"]


def _is_module(dotted):
    """Whether ``dotted`` names a module or package of this tree (gaussian_retina, tools)."""
    path = ROOT.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _imported_modules(path, source=None):
    """(line, module) for every import in ``path`` (or ``source`` read as that file), resolved."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    package = parts[:-1]  # for __init__.py too: its package is its folder
    for node in ast.walk(ast.parse(path.read_text() if source is None else source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module
            for alias in node.names:
                submodule = f"{module}.{alias.name}"
                yield node.lineno, submodule if _is_module(submodule) else module


def _files(*parts):
    files = []
    for part in parts:
        path = ROOT / part
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def _package_imports(*parts):
    """(file:line, module) for every import of a gaussian_retina module in ``parts``."""
    for path in _files(*parts):
        for line, module in _imported_modules(path):
            if module == "gaussian_retina" or module.startswith("gaussian_retina."):
                yield f"{path.relative_to(ROOT)}:{line}", module


def _within(module, *parts):
    return any(module == f"gaussian_retina.{p}" or module.startswith(f"gaussian_retina.{p}.")
               for p in parts)


def _violations(parts, allowed):
    return [f"{where} imports {module}" for where, module in _package_imports(*parts)
            if not _within(module, *allowed)]


def test_core_never_imports_a_wing():
    core = [f"gaussian_retina/{p}" for p in CORE]
    assert _violations(core, ["config", "data", "modeling", "evaluation"]) == []


def test_data_never_imports_modeling():
    assert _violations(["gaussian_retina/data"], ["config", "data"]) == []


def test_shelves_import_only_data():
    assert _violations(["gaussian_retina/shelves"], ["shelves", "data"]) == []


def test_baselines_import_only_modeling():
    assert _violations(["gaussian_retina/baselines"], ["baselines", "modeling"]) == []


def test_the_package_never_imports_tools():
    found = [f"{p.relative_to(ROOT)}:{line} imports {m}" for p in _files("gaussian_retina")
             for line, m in _imported_modules(p)
             if m in ("tools", "benchmark_harness") or m.startswith("tools.")]
    assert found == []


def _patches_sys_path(tree):
    """Lines where code reaches sys.path (append, insert, assignment, site.addsitedir)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "path" and \
                isinstance(node.value, ast.Name) and node.value.id == "sys":
            yield node.lineno
        if isinstance(node, ast.Attribute) and node.attr == "addsitedir":
            yield node.lineno


def test_tools_and_train_net_never_patch_sys_path():
    found = [f"{p.relative_to(ROOT)}:{line}" for p in _files("tools", "train_net.py")
             for line in _patches_sys_path(ast.parse(p.read_text()))]
    assert found == []


def _names_a_tool(tree):
    """Lines where a test imports tools/ or names a script under it (to run it)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            if any(n in ("tools", "benchmark_harness") or n.startswith("tools.") for n in names):
                yield node.lineno
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and (
            node.value == "tools" or node.value.startswith(("tools/", "tools\\"))
        ):
            yield node.lineno


def test_no_test_needs_tools():
    tests = [p for p in _files("tests") if p.name != "test_layout.py"]  # names tools/ to check it
    found = [f"{p.relative_to(ROOT)}:{line}" for p in tests
             for line in _names_a_tool(ast.parse(p.read_text()))]
    assert found == []


@pytest.mark.parametrize(
    "source, expected",
    [
        ("import gaussian_retina.shelves.register", "gaussian_retina.shelves.register"),
        ("from gaussian_retina import shelves", "gaussian_retina.shelves"),
        ("from gaussian_retina import add_gaussian_retina_config", "gaussian_retina"),
        ("from .. import shelves", "gaussian_retina.shelves"),
        ("from ..shelves import register", "gaussian_retina.shelves.register"),
        ("from ..shelves.box_table import BoxTable", "gaussian_retina.shelves.box_table"),
        ("from . import gaussian_loss", "gaussian_retina.modeling.gaussian_loss"),
    ],
)
def test_every_import_form_resolves_to_the_module(source, expected):
    """Each form, read as if written in modeling/meta_arch.py, is seen as the module it imports."""
    scratch = PACKAGE / "modeling" / "meta_arch.py"
    assert [m for _, m in _imported_modules(scratch, source)] == [expected]


def test_config_defaults_match_the_functions():
    """The renderer and the loss called bare use the config's defaults (checked, so they cannot drift)."""
    import inspect

    from common import get_config
    from gaussian_retina import GaussianMapRenderer, gaussian_map_loss

    g = get_config(None).MODEL.GAUSSIAN
    renderer = GaussianMapRenderer()
    assert (renderer.stride, renderer.template_size, renderer.sigma, renderer.accumulate) == (
        g.OUT_STRIDE, g.TEMPLATE_SIZE, g.SIGMA, g.ACCUMULATE
    )
    loss = inspect.signature(gaussian_map_loss).parameters
    assert loss["normalize"].default is inspect.Parameter.empty  # a reading the caller picks
    assert [loss[k].default for k in ("pos_thresh", "neg_thresh", "neg_ratio", "min_negatives")] == [
        g.POS_THRESH, g.NEG_THRESH, g.NEG_RATIO, g.MIN_NEGATIVES
    ]
