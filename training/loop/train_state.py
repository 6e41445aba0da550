"""What the training loop holds: one typed object, built by training_loop.setup and passed to every step.

Each field says which setup step fills it; the loop's modules (train_step, snapshots, train_logging)
read and advance these fields and add none of their own. A snapshot is the plain-data image of the
fields it names (snapshots.make_snapshot), so this class is also the list of what a resume restores.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from collections.abc import Iterator

    import dnnlib
    from torch_utils import training_stats
    from training import augment, cameras, dataset, loss, patches
    from training.loop import run_dir


@dataclasses.dataclass
class Progress:
    """The loop's counters (stored in every snapshot under 'progress')."""

    cur_nimg: int = 0  # Real images shown to D so far, over all ranks.
    cur_tick: int = 0  # Ticks finished.
    batch_idx: int = 0  # Training steps taken.
    tick_start_nimg: int = 0  # cur_nimg at the start of the current tick.
    total_time: float = 0.0  # Seconds spent in ticks, summed over resumes.

    KEYS = ('cur_nimg', 'cur_tick', 'batch_idx', 'tick_start_nimg', 'total_time')

    def as_dict(self) -> dict:
        return {key: getattr(self, key) for key in self.KEYS}

    def load(self, values: dict) -> None:
        for key in self.KEYS:
            setattr(self, key, values[key])


@dataclasses.dataclass(eq=False)
class TrainState:
    """Everything one rank's training loop holds (see training_loop.setup for the order it is filled in)."""

    # The run and this process.
    c: dnnlib.EasyDict  # training_options.json: the options, derive.DERIVED_KEYS and launch.RUN_KEYS.
    rank: int  # This process's rank; only rank 0 writes files.
    world_size: int  # Number of processes.
    device: torch.device  # This rank's device.
    log: run_dir.RunLog  # log.txt of the run (and stdout) on rank 0.
    progress: Progress = dataclasses.field(default_factory=Progress)
    best_metric: dict | None = None  # dict(name, value, kimg) of the best first metric so far.

    # Data and G's inputs (training_loop.setup_data).
    dataset: dataset.ImageFolderDataset | None = None
    camera_prior: cameras.CameraPrior | None = None  # G's cameras.
    patch_sampler: patches.PatchSampler | None = None  # (s, dx, dy) at cur_nimg (Eq. 3-5).
    batch_gpu: int = 0  # Images per rank and accumulation round.
    num_rounds: int = 0  # Accumulation rounds per step: batch = num_rounds * batch_gpu * world_size.
    input_stream: torch.Generator | None = (
        None  # Latents, cameras, patches of the global batch (all ranks alike).
    )
    real_stream: Iterator | None = None  # This rank's real batches (data_iter.make_real_stream).

    # Networks and their optimisation (training_loop.setup_modules).
    G: torch.nn.Module | None = None
    D: torch.nn.Module | None = None
    G_ema: torch.nn.Module | None = None
    augment_pipe: augment.AugmentPipe | None = None  # None = no augmentation.
    ada: augment.AdaController | None = None  # None unless --aug ada.
    loss: loss.PatchLoss | None = None
    phases: list = dataclasses.field(default_factory=list)  # Gmain, Dmain, Dreg (train_step.make_phases).
    optimizers: dict = dataclasses.field(default_factory=dict)  # 'G', 'D' -> torch.optim.Adam.

    # Reporting (training_loop.setup, train_logging.setup_grid).
    stats_collector: training_stats.Collector | None = None
    writer: Any = None  # TensorBoard SummaryWriter on rank 0 (None if unavailable).
    tick_scales: list = dataclasses.field(
        default_factory=list
    )  # Patch scales drawn this tick, for the histogram.
    grid_z: torch.Tensor | None = None  # Fixed latents of the image grid. [grid_seeds, z_dim]
    grid_camera: cameras.Camera | None = None  # Fixed cameras of the image grid (grid_cameras of them).
    grid_c: torch.Tensor | None = (
        None  # One-hot classes of the grid's rows [grid_seeds, c_dim]; None = unconditional.
    )

    # Ending (training_loop.training_loop).
    signals: Any = None  # training_loop.StopSignals while training.
    reason: str | None = None  # Why training ended: 'done' or the stop signal's name.

    MODULES = ('G', 'D', 'G_ema', 'augment_pipe')  # The modules a snapshot stores, by field name.

    def modules(self) -> dict:
        """The snapshot's modules of this state that exist: name -> torch.nn.Module."""
        return {name: getattr(self, name) for name in self.MODULES if getattr(self, name) is not None}
