"""EasyDict, construction of registered classes by name, and a download-once file cache."""

import hashlib
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from dnnlib import registry

CACHE_ENV_VAR = 'PGRF_CACHE_DIR'


class EasyDict(dict):
    """A dict whose keys are also attributes: `cfg.lr` reads `cfg['lr']`."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __setattr__(self, name, value):
        self[name] = value

    def __delattr__(self, name):
        del self[name]


def get_obj_by_name(name: str):
    """The class or function registered under `name` (a stable name or an alias; see dnnlib/registry.py).

    Names are never resolved by import path: a name that is not registered raises
    registry.UnknownClassError (a ValueError) and nothing is imported.
    """
    return registry.resolve(name)


def construct_class_by_name(*args, class_name: str, **kwargs):
    """Instantiate the registered class named by `class_name` with the given arguments.

    Unknown keyword arguments raise TypeError from the constructor: a misspelt key never passes silently.
    """
    return get_obj_by_name(class_name)(*args, **kwargs)


def get_cache_dir(*subdirs: str) -> str:
    """The download cache: $PGRF_CACHE_DIR, else $XDG_CACHE_HOME/pgrf, else ~/.cache/pgrf."""
    root = os.environ.get(CACHE_ENV_VAR)
    if not root:
        root = os.path.join(os.environ.get('XDG_CACHE_HOME', os.path.expanduser('~/.cache')), 'pgrf')
    return os.path.join(root, *subdirs)


def sha256_of(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def _cache_path(url: str, cache_dir: str) -> str:
    name = os.path.basename(urllib.parse.urlparse(url).path) or 'download'
    key = hashlib.sha256(url.encode()).hexdigest()[:16]
    return os.path.join(cache_dir, f'{key}_{name}')


def _download(url: str, dst: str, timeout: float) -> None:
    """Download to a temp file beside dst, then rename: a half-finished download never looks cached."""
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(dst), prefix='.partial-')
    try:
        with os.fdopen(fd, 'wb') as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        os.replace(tmp, dst)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def open_url(url: str, cache_dir: str | None = None, sha256: str | None = None, timeout: float = 60.0):
    """Open a local path or a URL for binary reading; URLs are downloaded once into the cache.

    `sha256`, when given, is checked on every open, so a truncated or tampered cache entry is caught.
    Offline, the error names the URL and the exact path at which to place the file by hand.
    """
    if '://' not in url or url.startswith('file://'):
        path = urllib.parse.urlparse(url).path if url.startswith('file://') else url
        if not os.path.isfile(path):
            raise FileNotFoundError(f'no such file: {path}')
        _check_hash(path, sha256, url)
        return open(path, 'rb')

    cache_dir = cache_dir or get_cache_dir('downloads')
    path = _cache_path(url, cache_dir)
    if not os.path.isfile(path):
        try:
            _download(url, path, timeout)
        except (urllib.error.URLError, OSError, TimeoutError) as err:
            raise OSError(
                f'could not download {url} ({err}). If this machine is offline, download the file elsewhere '
                f'and place it at {path} (or set ${CACHE_ENV_VAR} to a folder holding it under that name).'
            ) from err
    _check_hash(path, sha256, url)
    return open(path, 'rb')


def _check_hash(path: str, sha256: str | None, url: str) -> None:
    if sha256 is None:
        return
    actual = sha256_of(path)
    if actual != sha256.lower():
        raise OSError(
            f'{path} (for {url}) has sha256 {actual}, expected {sha256}: the file is corrupt or a different '
            f'version. Delete it and download again.'
        )
