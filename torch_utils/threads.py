"""CPU threading that degrades gracefully when several processes share the cores.

OpenMP worker threads (PyTorch's CPU build uses GNU libgomp) busy-wait between parallel regions. With
two PyTorch processes on the same cores (training beside calc_metrics.py, two runs on a workstation),
each process's spinning threads burn the time slices the other needs: on a 2-core machine a demo tick
went from 35 s to 730 s. A passive wait policy makes idle threads sleep instead. OpenMP reads these
variables once, when the library loads, so `configure` must run before `import torch`.
"""

import contextlib
import os
import sys
import warnings
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch must not load before `configure` has run
    import torch

# Set unless the user set them: sleep instead of spinning (libgomp: OMP_WAIT_POLICY; Intel OpenMP:
# KMP_BLOCKTIME, the spin time in ms, for builds linked against it).
PASSIVE_ENV = dict(OMP_WAIT_POLICY='PASSIVE', KMP_BLOCKTIME='0')
THREAD_ENV = ('OMP_NUM_THREADS', 'MKL_NUM_THREADS')


def configure(threads: int | None = None, passive: bool = True) -> None:
    """Thread count (None = the library default, one per core) and wait policy of this process and its children."""
    if passive:
        for key, value in PASSIVE_ENV.items():
            os.environ.setdefault(key, value)
    if threads is not None:
        if threads < 1:
            raise ValueError(f'threads must be >= 1, got {threads}')
        for key in THREAD_ENV:
            os.environ[key] = str(threads)
    if (
        'torch' in sys.modules
    ):  # too late for the wait policy (read at load); the thread count can still change
        if threads is not None:
            sys.modules['torch'].set_num_threads(threads)
        if passive:
            warnings.warn(
                'torch_utils.threads.configure ran after `import torch`: the wait policy does not apply',
                stacklevel=2,
            )


# Below this many multiply-adds an op runs on one thread. Measured on the 2-core CPU (oneDNN, passive
# waits): the weight gradient of a 3x3 conv 32 -> 32 at 32^2, batch 4 (38M MACs) took 0.42 ms on one thread
# and 4-6 ms on two while other processes were running, where the second thread's barriers wait for a
# time slice; a 1x1 conv's took 0.07 ms against 7 ms. Above ~0.5 ms of work a second thread pays.
SERIAL_MACS = 2**26


@contextlib.contextmanager
def serial_if_small(macs: float, device: 'torch.device'):
    """Run the enclosed CPU op on one intra-op thread when its work (multiply-adds) is below SERIAL_MACS."""
    import torch

    threads = torch.get_num_threads()
    if device.type != 'cpu' or threads == 1 or macs >= SERIAL_MACS:
        yield
        return
    torch.set_num_threads(1)  # cheap (< 1 us a pair), process-wide: backward ops run on this same thread
    try:
        yield
    finally:
        torch.set_num_threads(threads)
