"""Two gloo processes on the CPU: same parameters on both ranks after training, files only from rank 0."""

import os

import pytest
import torch
from test_train_fixtures import ddp_worker, make_tiny_setup

from torch_utils import checkpoint, distributed
from training.loop import run_dir
from training.options import launch


@pytest.mark.slow
def test_two_process_gloo_run_stays_in_sync_and_only_rank0_writes(tmp_path):
    setup = make_tiny_setup(tmp_path, kimg=0.016)
    c = launch.resolve_training_options(
        outdir=setup['outdir'], cfg=setup['cfg'], data=setup['data'], gpus=2, resume=None, seed=0, desc=None,
        flags={},
    )  # fmt: skip
    assert c.num_gpus == 2 and c.batch_gpu == 2  # global batch 4 split over 2 ranks
    launch._prepare_run_dir(c)
    distributed.spawn(ddp_worker, 2, dict(c), str(tmp_path), timeout_s=300)
    ranks = [torch.load(tmp_path / f'rank{r}.pt', weights_only=True) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        if not key.endswith('w_avg'):  # the w average follows each rank's own latents (truncation only)
            assert torch.equal(ranks[0][key], ranks[1][key]), key
    snapshot = checkpoint.load(run_dir.list_snapshots(c.run_dir)[-1])
    G = snapshot['modules']['G']['state_dict']
    assert all(torch.equal(G[k], ranks[0][f'G.{k}']) for k in G)  # rank 0 wrote the snapshot
    assert snapshot['rng']['world_size'] == 2 and len(snapshot['rng']['states']) == 2
    # Rank 0 alone wrote: one events file, each progress line once, the per-rank RNG streams differ.
    files = os.listdir(c.run_dir)
    assert len([f for f in files if f.startswith('events.out.tfevents')]) == 1
    log = open(os.path.join(c.run_dir, 'log.txt')).read()
    assert log.count('tick 0 ') == 1 and log.count('Exiting') == 1
    states = snapshot['rng']['states']
    assert not torch.equal(states[0]['torch'], states[1]['torch'])
