"""The closed list of classes (and factory functions) that PGRF builds from data, by stable name.

Snapshots, training_options.json, presets and metric settings name what to build with a
`class_name`. Resolving that name by import path would let a file run any importable callable (a
process-spawning standard-library class with an argument list is enough), and even importing an
arbitrary module runs its top-level code. So a name from data is only ever looked up here: a name
that is not listed is refused with one line before anything is imported or constructed.

Stable names (`pgrf.Generator`) are what new files store. They also let the code move: when a
class changes module, its entry's target changes and its old dotted path joins the aliases, so
files written before the move keep loading.
"""

import importlib

# fmt: off
_BUILTIN = (
    # stable name               where it lives now (also accepted)                    older paths files may hold
    ('pgrf.Generator',          'training.networks.generator.Generator',              ('training.generator.Generator',)),
    ('pgrf.Discriminator',      'training.networks.discriminator.PatchDiscriminator', ('training.discriminator.PatchDiscriminator',)),
    ('pgrf.AugmentPipe',        'training.augment.AugmentPipe',                       ()),
    ('pgrf.AdaController',      'training.augment.AdaController',                     ()),
    ('pgrf.PatchLoss',          'training.loss.PatchLoss',                            ()),
    ('pgrf.ImageFolderDataset', 'training.dataset.ImageFolderDataset',                ()),
    ('pgrf.make_camera_prior',  'training.cameras.make_camera_prior',                 ()),
)
# fmt: on

_targets: dict = {}  # stable name -> dotted path (str) or the object itself (registered from code)
_aliases: dict = {}  # any accepted name (stable names included) -> stable name


class UnknownClassError(ValueError):
    """A file names a class that PGRF does not build from data (nothing was imported or constructed)."""


class NotPlainDataError(ValueError):
    """Constructor kwargs from a file hold something other than numbers, strings, bools, None, lists, dicts."""


def register(name: str, target, aliases=()) -> None:
    """Add `name` (resolving to `target`: an object, or 'package.module.Attr') to the closed list.

    For code only (plugins, tests): data can never add entries. Re-registering a name replaces it.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f'registry name must be a non-empty string, got {name!r}')
    _targets[name] = target
    where_now = (target,) if isinstance(target, str) else ()  # its current import path is accepted too
    for alias in (name, *where_now, *aliases):
        _aliases[alias] = name


for _name, _target, _old in _BUILTIN:
    register(_name, _target, _old)


def is_known(name) -> bool:
    return isinstance(name, str) and name in _aliases


def known_names() -> list[str]:
    return sorted(_targets)


def stable_name(name: str) -> str:
    """The stable name for any accepted name; UnknownClassError for anything else."""
    if not is_known(name):
        shown = name if isinstance(name, str) else f'a {type(name).__name__}'
        raise UnknownClassError(
            f'"{shown}" is not a class PGRF builds by name (known: {", ".join(known_names())}); '
            f'nothing was imported or built'
        )
    return _aliases[name]


def resolve(name: str):
    """The object a (stable or alias) name stands for; nothing is imported for an unknown name."""
    target = _targets[stable_name(name)]
    if not isinstance(target, str):
        return target
    module_name, _, attr = target.rpartition('.')
    return getattr(importlib.import_module(module_name), attr)


def name_of(obj) -> str:
    """The stable name under which `obj` (a class or function) is registered; UnknownClassError if none."""
    dotted = f'{obj.__module__}.{obj.__qualname__}'
    for name, target in _targets.items():
        if target is obj or target == dotted:
            return name
    raise UnknownClassError(
        f'{dotted} is not in the registry of classes a snapshot may rebuild; add it to dnnlib/registry.py'
    )


# ----------------------------------------------------------------------------
# Plain data from files.

_SCALARS = (bool, int, float, str, type(None))


def check_plain(value, where: str) -> None:
    """Raise NotPlainDataError unless `value` is numbers, strings, bools, None, and lists/tuples/dicts of those.

    The check is on kinds of values, not on keys, so constructors may grow new options freely.
    """
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            check_plain(item, f'{where}[{i}]')
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotPlainDataError(f'{where}: key {key!r} is a {type(key).__name__}, not a string')
            check_plain(item, f'{where}[{key!r}]')
        return
    raise NotPlainDataError(
        f'{where} is a {type(value).__module__}.{type(value).__qualname__}; constructor options from a file '
        f'must be numbers, strings, bools, None, or lists/dicts of those'
    )


def check_specs(tree, where: str) -> None:
    """Every dict in `tree` that has a `class_name` must name a registered class and hold plain data.

    Run on whatever a file supplies before any of it is used (training options, a snapshot's modules).
    """
    if isinstance(tree, dict):
        if 'class_name' in tree:
            try:
                stable_name(tree['class_name'])
            except UnknownClassError as err:
                raise UnknownClassError(f'{where}: {err}') from None
            check_plain({k: v for k, v in tree.items() if k != 'state_dict'}, where)
        for key, item in tree.items():
            if key != 'state_dict':
                check_specs(item, f'{where}[{key!r}]')
    elif isinstance(tree, (list, tuple)):
        for i, item in enumerate(tree):
            check_specs(item, f'{where}[{i}]')
