"""Framework-free helpers: EasyDict, the closed registry of buildable classes, cached downloads."""

from dnnlib import registry
from dnnlib.util import EasyDict, construct_class_by_name, get_cache_dir, get_obj_by_name, open_url, sha256_of

__all__ = [
    'EasyDict',
    'construct_class_by_name',
    'get_cache_dir',
    'get_obj_by_name',
    'open_url',
    'registry',
    'sha256_of',
]
