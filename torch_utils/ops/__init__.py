"""Custom ops, each with a pure-PyTorch `ref` path (the specification) and a `cuda` twin."""
