"""The README's first command, scripts/demo.sh, end to end on a copy of the repository (a few kimg of
training would take minutes, so it trains 16 images): CI runs only the test command, and without this test
a broken demo.sh (a renamed flag, a moved script) would reach a newcomer first."""

import os
import shutil
import subprocess
import sys

import pytest
from PIL import Image
from repo_paths import REPO_ROOT

_NOT_SHIPPED = ('.git', '.venv', 'data', 'demo-out', 'tests', '__pycache__', '*.egg-info', '.pytest_cache')


def _copy_tracked_files(dest) -> None:
    """The files git tracks (what a fresh clone has), or without git the tree minus what is not shipped."""
    has_git = shutil.which('git') is not None
    listing = has_git and subprocess.run(['git', 'ls-files', '-z'], cwd=REPO_ROOT, capture_output=True)
    if not has_git or listing.returncode != 0:
        shutil.copytree(REPO_ROOT, dest, ignore=shutil.ignore_patterns(*_NOT_SHIPPED))
        return
    for name in filter(None, (n.decode() for n in listing.stdout.split(b'\0'))):
        if name.startswith('tests/'):
            continue
        os.makedirs(os.path.join(dest, os.path.dirname(name)), exist_ok=True)
        shutil.copy2(os.path.join(REPO_ROOT, name), os.path.join(dest, name))


@pytest.mark.slow
def test_demo_sh_renders_trains_and_exports_everything(tmp_path):
    repo = tmp_path / 'repo'
    _copy_tracked_files(repo)
    env = dict(os.environ, PGRF_PYTHON=sys.executable, PGRF_DEMO_METRIC='none', OMP_NUM_THREADS='1')
    proc = subprocess.run(
        ['bash', 'scripts/demo.sh', '--kimg', '0.008', '--snap', '1'],
        cwd=repo, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # What the final snapshot holds: a run ends at an ADA-interval boundary (4 steps of 4 images).
    assert 'demo: trained 0.016 kimg' in proc.stdout and 'demo: done' in proc.stdout
    out = repo / 'demo-out'
    samples = sorted((out / 'images').glob('images-seed*.png'))
    assert len(samples) == 16 and Image.open(samples[0]).size == (64, 64)  # 2x the 32^2 training images
    assert list((out / 'images').glob('images-grid-*.png'))
    assert list((out / 'video').glob('*.mp4')) and (out / 'training-grid.png').is_file()
    assert {p.suffix for p in (out / 'mesh').iterdir()} >= {'.ply', '.png'}
    assert (repo / 'data' / 'demo' / 'dataset.zip').is_file()
    assert (repo / 'data' / 'demo_classic' / 'dataset.zip').is_file()
