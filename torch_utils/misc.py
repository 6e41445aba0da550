"""Shape checks, seeding and RNG state, cross-rank consistency checks, small context managers."""

import contextlib
import functools
import inspect
import random

import numpy as np
import torch

import dnnlib

# ----------------------------------------------------------------------------
# Shapes.


def assert_shape(tensor: torch.Tensor, ref_shape: list) -> None:
    """Raise AssertionError unless `tensor.shape` matches `ref_shape`; None in `ref_shape` matches any size."""
    if tensor.ndim != len(ref_shape):
        raise AssertionError(
            f'wrong number of dimensions: got {tensor.ndim} {list(tensor.shape)}, expected {len(ref_shape)} {ref_shape}'
        )
    for idx, (size, ref_size) in enumerate(zip(tensor.shape, ref_shape)):
        if ref_size is None:
            continue
        if isinstance(ref_size, torch.Tensor):
            ref_size = int(ref_size)
        if size != ref_size:
            raise AssertionError(
                f'wrong size for dimension {idx}: got {list(tensor.shape)}, expected {ref_shape}'
            )


# ----------------------------------------------------------------------------
# Seeding and RNG state (for exact resume).


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)  # also seeds all CUDA devices


def get_rng_state() -> dict:
    """All RNG states as plain data (tensors, lists, ints), loadable with torch.load(weights_only=True)."""
    py_version, py_state, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = dict(
        python=dict(version=py_version, state=list(py_state), gauss=py_gauss),
        numpy=dict(
            name=np_name,
            keys=torch.from_numpy(np_keys.astype(np.int64)),
            pos=int(np_pos),
            has_gauss=int(np_has_gauss),
            gauss=float(np_gauss),
        ),
        torch=torch.get_rng_state(),
    )
    if torch.cuda.is_available():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore the states captured by `get_rng_state`."""
    py = state['python']
    random.setstate((py['version'], tuple(py['state']), py['gauss']))
    nps = state['numpy']
    np.random.set_state(
        (nps['name'], nps['keys'].numpy().astype(np.uint32), nps['pos'], nps['has_gauss'], nps['gauss'])
    )
    torch.set_rng_state(state['torch'])
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state['cuda'])


# ----------------------------------------------------------------------------
# Constructor kwargs, recorded so that a checkpoint can rebuild a module from plain data.


def record_init_kwargs(init):
    """Decorate a module's __init__ so that `self.init_kwargs` holds every argument it was built with.

    Checkpoints store `init_kwargs` (plain data) beside the state_dict and rebuild the module from them.
    """
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        bound = signature.bind(self, *args, **kwargs)
        bound.apply_defaults()
        recorded = dnnlib.EasyDict(bound.arguments)
        del recorded['self']
        for name, param in signature.parameters.items():
            if param.kind == inspect.Parameter.VAR_KEYWORD:
                recorded.update(recorded.pop(name))
        init(self, *args, **kwargs)
        self.init_kwargs = recorded

    return wrapper


# ----------------------------------------------------------------------------
# Gradients.


@contextlib.contextmanager
def requires_grad(module: torch.nn.Module, flag: bool):
    """Temporarily set requires_grad of every parameter of `module`; restores the previous flags."""
    params = list(module.parameters())
    previous = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(flag)
    try:
        yield module
    finally:
        for p, prev in zip(params, previous):
            p.requires_grad_(prev)


# ----------------------------------------------------------------------------
# Cross-rank consistency.


def _named_tensors(module: torch.nn.Module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def check_ddp_consistency(module: torch.nn.Module, ignore_regex: str | None = None) -> None:
    """Raise if any parameter or buffer differs between rank 0 and this rank (a no-op single-process)."""
    import re

    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    for name, tensor in _named_tensors(module):
        if ignore_regex is not None and re.fullmatch(ignore_regex, name):
            continue
        local = tensor.detach()
        other = local.clone()
        torch.distributed.broadcast(other, src=0)
        if not torch.equal(torch.nan_to_num(local), torch.nan_to_num(other)):
            raise RuntimeError(f'rank {torch.distributed.get_rank()}: "{name}" differs from rank 0')
