"""The import contract: ``search_spaces`` <- ``hardware`` <- ``predictors`` <- ``nas``.

A package may import only itself and the packages below it; the one shared
leaf is the registry module, which every package may import and which imports
nothing of the project.  Every import statement counts, including those inside
functions, so a cycle cannot be dodged by hiding an import in a function.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("search_spaces", "hardware", "predictors", "nas")
SHARED_LEAF = "nas.registry"


def imported_modules(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """``(line, dotted module)`` of every import in ``path``, relative ones resolved."""
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # "from pkg import sub" may name a submodule: count "pkg.sub" as well
            found += [(node.lineno, module)] + [(node.lineno, f"{module}.{a.name}") for a in node.names]
    return found


def violations(root: Path = ROOT) -> list[str]:
    out = []
    for rank, layer in enumerate(LAYERS):
        higher = LAYERS[rank + 1:]
        for path in sorted((root / layer).rglob("*.py")):
            module = ".".join(path.relative_to(root).with_suffix("").parts)
            for line, target in imported_modules(path, root):
                top = target.split(".")[0]
                if module == SHARED_LEAF and top in LAYERS:
                    out.append(f"{path.relative_to(root)}:{line}: the shared leaf imports {target}")
                elif top in higher and not (target == SHARED_LEAF or target.startswith(SHARED_LEAF + ".")):
                    out.append(f"{path.relative_to(root)}:{line}: {layer} imports {target} "
                               f"(a higher layer: {top})")
    return out


def test_no_package_imports_a_higher_layer():
    problems = violations()
    assert not problems, "layer violations:\n" + "\n".join(problems)


def test_the_contract_catches_a_wrong_import(tmp_path):
    """The checker itself: a lower package importing a higher one is reported."""
    for layer in LAYERS:
        (tmp_path / layer).mkdir()
        (tmp_path / layer / "__init__.py").write_text("")
    (tmp_path / "hardware" / "bad.py").write_text("def f():\n    from nas.sources import RunContext\n")
    (tmp_path / "search_spaces" / "ok.py").write_text("from nas.registry import Registry\n")
    (tmp_path / "nas" / "registry.py").write_text("import hardware\n")
    problems = violations(tmp_path)
    assert any("hardware/bad.py:2: hardware imports nas.sources" in p for p in problems)
    assert any("the shared leaf imports hardware" in p for p in problems)
    assert not any("search_spaces/ok.py" in p for p in problems)


@pytest.mark.parametrize("layer", LAYERS)
def test_every_layer_is_checked(layer):
    assert list((ROOT / layer).rglob("*.py")), f"no modules found under {layer}/"
