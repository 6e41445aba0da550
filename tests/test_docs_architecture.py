"""docs/architecture.md stays true: every file it names exists and defines every name it gives."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = os.path.join(ROOT, 'docs', 'architecture.md')
CODE_NAME = re.compile(r'`([\w./]+\.py|[\w./]+/)(?::([\w.]+))?`')  # `path.py`, `path.py:name`, `folder/`


def defined_names(path: str) -> set[str]:
    """Top-level functions, classes and assignments of a module, and Class.method for its classes' methods."""
    with open(path, encoding='utf-8') as f:
        tree = ast.parse(f.read())
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        if isinstance(node, ast.ClassDef):
            names |= {f'{node.name}.{n.name}' for n in node.body if isinstance(n, ast.FunctionDef)}
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


def referenced() -> list[tuple[str, str | None]]:
    with open(DOC, encoding='utf-8') as f:
        return [(m.group(1), m.group(2)) for m in CODE_NAME.finditer(f.read())]


def test_every_file_and_name_in_the_architecture_page_exists():
    refs = referenced()
    assert len(refs) > 40  # the page is written in checkable names
    missing = []
    for path, name in refs:
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            missing.append(path)
        elif name is not None and name not in defined_names(full):
            missing.append(f'{path}:{name}')
    assert not missing, f'docs/architecture.md names what the code does not have: {missing}'


def test_every_package_is_on_the_map():
    with open(DOC, encoding='utf-8') as f:
        text = f.read()
    packages = []
    for d, dirs, files in os.walk(ROOT):
        dirs[:] = [x for x in dirs if not x.startswith('.') and x not in ('tests', 'scripts', '__pycache__')]
        if '__init__.py' in files:
            packages.append(os.path.relpath(d, ROOT).replace(os.sep, '/'))
    assert 'training' in packages
    unmapped = [p for p in packages if f'{p.rsplit("/", 1)[-1]}/' not in text]
    assert not unmapped, f'docs/architecture.md does not show the packages {unmapped}'


def test_the_checker_sees_a_wrong_name():
    """The check itself: a renamed function would be reported."""
    names = defined_names(os.path.join(ROOT, 'training', 'patches.py'))
    assert 'crop_patches' in names and 'BetaPatchSampler.beta' in names and 'crop_patch' not in names
    found = CODE_NAME.findall('see `training/patches.py:crop_patches` and `metrics/`')
    assert found == [('training/patches.py', 'crop_patches'), ('metrics/', '')]
