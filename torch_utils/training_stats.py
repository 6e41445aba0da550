"""Scalar statistics reported anywhere during training and reduced across ranks once per tick.

Usage:
    training_stats.report('Loss/G/loss', loss)         # any tensor / number / list; every element counts
    training_stats.report0('Progress/kimg', kimg)      # only rank 0's value counts
    collector = training_stats.Collector(regex='.*')   # once, at the start of training
    ...                                                 # at the end of each tick, on every rank:
    collector.update()                                  # one all_reduce for all names
    stats = collector.as_dict()                         # {name: {'num': n, 'mean': m, 'std': s}}
    training_stats.write_jsonl(run_dir / 'stats.jsonl', dict(stats, timestamp=time.time()))
    for name, value in training_stats.scalars(stats).items(): writer.add_scalar(name, value, kimg)

Each name accumulates (count, sum, sum of squares) in float64 on the device of the reported values,
so reporting never synchronises with the GPU. Counters are cumulative and global; each Collector keeps
its own last-seen copy and reports the difference, so several collectors (e.g. one per regex) coexist.
"""

import json
import math
import os
import re

import torch

_counters: dict[str, dict[torch.device, torch.Tensor]] = {}  # name -> device -> float64 [3]


# ----------------------------------------------------------------------------
# Reporting.


def _rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


def report(name: str, value):
    """Add every element of `value` (tensor of any shape, number, or list) to statistic `name`.

    Returns `value` unchanged, so it can wrap an expression. Non-finite values are kept, so a NaN loss
    shows up as a NaN mean rather than disappearing.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f'training_stats.report: name must be a non-empty string, got {name!r}')
    if isinstance(value, torch.Tensor):
        elems = value.detach().flatten().to(torch.float64)
    else:
        elems = torch.as_tensor(value, dtype=torch.float64).flatten()
    moments = torch.stack([torch.ones_like(elems).sum(), elems.sum(), elems.square().sum()])  # [3]
    per_device = _counters.setdefault(name, {})
    if elems.device in per_device:
        per_device[elems.device].add_(moments)
    else:
        per_device[elems.device] = moments
    return value


def report0(name: str, value):
    """Like `report`, but only rank 0's value counts (other ranks still register the name)."""
    report(name, value if _rank() == 0 else [])
    return value


def _local_totals(names: list[str], device: torch.device) -> torch.Tensor:
    """Cumulative (count, sum, sumsq) of each name on this rank, summed over devices: [len(names), 3]."""
    totals = torch.zeros([len(names), 3], dtype=torch.float64, device=device)
    for i, name in enumerate(names):
        for moments in _counters.get(name, {}).values():
            totals[i] += moments.to(device)
    return totals


# ----------------------------------------------------------------------------
# Collecting.


def _reduce_device() -> torch.device:
    if torch.distributed.is_initialized() and torch.distributed.get_backend() == 'nccl':
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')


def _all_names(regex: re.Pattern) -> list[str]:
    """Sorted names matching `regex` reported on any rank (so every rank reduces the same list)."""
    local = sorted(name for name in _counters if regex.fullmatch(name))
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return local
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, local)
    return sorted(set().union(*gathered))


class Collector:
    """Statistics reported since the previous `update()` (or since construction), reduced across ranks.

    `update()` is a collective: call it on every rank at the same point, with the same regex.
    """

    def __init__(self, regex: str = '.*', keep_previous: bool = True):
        self._regex = re.compile(regex)
        self._keep_previous = keep_previous  # A name with no reports this tick keeps last tick's value.
        self._seen: dict[str, torch.Tensor] = {}  # name -> cumulative local totals at the last update
        self._moments: dict[str, tuple[float, float, float]] = {}
        for name in _counters:  # Start from now: reports made before construction are not counted.
            if self._regex.fullmatch(name):
                self._seen[name] = _local_totals([name], torch.device('cpu'))[0]

    def names(self) -> list[str]:
        """Names available after the last update, sorted."""
        return sorted(self._moments)

    def update(self) -> None:
        """Reduce what every rank reported since the last update; one all_reduce for all names."""
        names = _all_names(self._regex)
        device = _reduce_device()
        totals = _local_totals(names, device)  # [K, 3]
        zero = torch.zeros(3, dtype=torch.float64)
        previous = torch.stack([self._seen.get(n, zero) for n in names]) if names else zero[:0]
        delta = totals - previous.reshape(len(names), 3).to(device)  # [K, 3]
        if torch.distributed.is_available() and torch.distributed.is_initialized() and names:
            torch.distributed.all_reduce(delta)
        totals, delta = totals.cpu(), delta.cpu()
        if not self._keep_previous:
            self._moments = {}
        for i, name in enumerate(names):
            self._seen[name] = totals[i]
            count, total, total_sq = delta[i].tolist()
            if count > 0:
                self._moments[name] = (count, total, total_sq)

    def num(self, name: str) -> int:
        """How many values of `name` were reduced in the last update (0 if none)."""
        return int(self._moments.get(name, (0, 0, 0))[0])

    def mean(self, name: str) -> float:
        """Mean over all ranks of `name` at the last update (NaN if it was never reported)."""
        count, total, _ = self._moments.get(name, (0, 0, 0))
        return total / count if count else float('nan')

    def std(self, name: str) -> float:
        """Population standard deviation of `name` at the last update (NaN if it was never reported)."""
        count, total, total_sq = self._moments.get(name, (0, 0, 0))
        if not count:
            return float('nan')
        mean = total / count
        return math.sqrt(max(total_sq / count - mean * mean, 0.0))

    def as_dict(self) -> dict:
        """{name: {'num': int, 'mean': float, 'std': float}} for every name at the last update (JSON-ready)."""
        return {n: dict(num=self.num(n), mean=self.mean(n), std=self.std(n)) for n in self.names()}


# ----------------------------------------------------------------------------
# Output helpers (the training loop decides when and where).


def scalars(stats: dict) -> dict:
    """{name: mean} from `Collector.as_dict()`, for TensorBoard's add_scalar."""
    return {name: value['mean'] for name, value in stats.items() if isinstance(value, dict)}


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None  # Strict JSON has no NaN/inf; null keeps the line readable by any parser.
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor) and obj.numel() == 1:
        return _json_safe(obj.item())
    return obj


def write_jsonl(path, record: dict) -> None:
    """Append `record` as one strict-JSON line to `path` and flush it (NaN/inf become null)."""
    line = json.dumps(_json_safe(record), allow_nan=False)
    with open(os.fspath(path), 'a', encoding='utf-8') as f:
        f.write(line + '\n')
        f.flush()
