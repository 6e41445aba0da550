"""Write this folder's fixture with the code of another checkout (the one before a change of layout).

    python tests/data/pre_layout/make_fixture.py --code-root /path/to/older/checkout

It trains the tiny CPU config of that checkout's tests for 4 steps (snapshot-000000.016.pt, kept) and
on to 12 steps; final_state.json holds a summary (sum and norm of every tensor, the counters) of the
12-step state. tests/test_pre_layout_snapshot.py resumes the kept snapshot with today's code and
checks that it arrives at the same state, so a layout change cannot strand existing runs.
"""

import argparse
import json
import os
import pathlib
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


def state_summary(data: dict) -> dict:
    """{'modules/G/state_dict/x': [sum, norm], ..., 'progress': {...}}: small, and tolerant to float noise."""
    import torch

    out = {}

    def walk(prefix, value):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            v = value.double()
            out[prefix] = [float(v.sum()), float(v.norm())]
        elif isinstance(value, dict):
            for k, v in value.items():
                walk(f'{prefix}/{k}', v)

    walk('modules', data['modules'])
    walk('optimizers', data['optimizers'])
    return dict(tensors=out, progress={k: v for k, v in data['progress'].items() if k != 'total_time'})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--code-root', required=True)
    root = os.path.abspath(parser.parse_args().code_root)
    sys.path[:0] = [root, os.path.join(root, 'tests')]
    os.chdir(root)
    from click.testing import CliRunner
    from test_train_fixtures import cli_args, make_tiny_setup

    import train
    from torch_utils import checkpoint
    from training import run_dir

    tmp = pathlib.Path(tempfile.mkdtemp())
    setup = make_tiny_setup(tmp, kimg=0.048)
    for extra in (['--kimg', '0.016'], ['--kimg', '0.048', '--resume', 'latest']):
        result = CliRunner().invoke(train.main, cli_args(setup, '--metrics', 'none', *extra))
        assert result.exit_code == 0, result.output
    [run] = run_dir.list_runs(setup['outdir'])
    snapshots = run_dir.list_snapshots(run)
    shutil.copy(snapshots[0], os.path.join(HERE, 'snapshot-000000.016.pt'))
    with open(os.path.join(HERE, 'final_state.json'), 'w') as f:
        json.dump(state_summary(checkpoint.load(snapshots[-1])), f, indent=0, sort_keys=True)
    shutil.rmtree(os.path.join(HERE, 'data'), ignore_errors=True)
    shutil.copytree(setup['data'], os.path.join(HERE, 'data'))
    shutil.copy(setup['cfg'], os.path.join(HERE, 'tiny.yaml'))
    shutil.copy(tmp / 'tiny_dataset.yaml', os.path.join(HERE, 'tiny_dataset.yaml'))
    print(f'wrote {HERE} from {root}')


if __name__ == '__main__':
    main()
