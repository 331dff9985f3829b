"""The layout's rules (ARCHITECTURE.md): the core never imports a wing; data never imports modeling."""
import ast

import pytest

from common import ROOT

PACKAGE = ROOT / "gaussian_retina"
CORE = ["config.py", "data", "modeling", "evaluation"]
WINGS = ("shelves", "baselines", "engine", "inference", "predict")


def _imported_modules(path):
    """Absolute names of the package modules a file imports (relative imports resolved)."""
    package = path.relative_to(ROOT).with_suffix("").parts[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                yield ".".join(base + ((node.module,) if node.module else ()))
            else:
                yield node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)


def _files(part):
    path = PACKAGE / part
    return [path] if path.is_file() else sorted(path.rglob("*.py"))


@pytest.mark.parametrize("part", CORE)
def test_core_never_imports_a_wing(part):
    for path in _files(part):
        for module in _imported_modules(path):
            assert not module.startswith(tuple(f"gaussian_retina.{w}" for w in WINGS)), (
                f"{path.relative_to(ROOT)} imports {module}"
            )


@pytest.mark.parametrize("part", ["data", "shelves"])
def test_data_never_imports_modeling(part):
    for path in _files(part):
        for module in _imported_modules(path):
            assert not module.startswith(("gaussian_retina.modeling", "gaussian_retina.baselines")), (
                f"{path.relative_to(ROOT)} imports {module}"
            )


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
