"""Just-in-time build of C++/CUDA extensions, and the one-warning fallback to `ref` paths."""

import warnings

_warned = set()


def warn_fallback_once(op_name: str, reason: str) -> None:
    """Warn once per (op, reason) that `impl='cuda'` falls back to the pure-PyTorch `ref` path."""
    key = (op_name, reason)
    if key in _warned:
        return
    _warned.add(key)
    warnings.warn(
        f'{op_name}: impl="cuda" falls back to impl="ref" because {reason}.', RuntimeWarning, stacklevel=3
    )
