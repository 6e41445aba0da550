"""scripts/demo_report.py: the demo's metric curve read from a run directory, printed and plotted."""

import json
import os
import sys

import numpy as np
import PIL.Image
from click.testing import CliRunner
from repo_paths import REPO_ROOT

sys.path.insert(0, os.path.join(REPO_ROOT, 'scripts'))
import demo_report  # noqa: E402


def _run_dir(tmp_path):
    run = tmp_path / 'run'
    run.mkdir()
    # Snapshot names as train.py writes them: whole kimg, or kimg.images inside one (0.016, 3.088).
    fids = {'000000.016': 210.0, '000001': 150.0, '000002': 120.0, '000003.088': 95.5}
    with open(run / 'metric-fid1k_full.jsonl', 'w') as f:
        for kimg in (
            '000000.016',
            '000003.088',
            '000001',
            '000002',
        ):  # any order; a re-evaluated snapshot's last line wins
            f.write(
                json.dumps(
                    dict(results={'fid1k_full': fids[kimg] + 1}, snapshot_pkl=f'network-snapshot-{kimg}.pt')
                )
                + '\n'
            )
        for kimg, fid in fids.items():
            f.write(
                json.dumps(dict(results={'fid1k_full': fid}, snapshot_pkl=f'network-snapshot-{kimg}.pt'))
                + '\n'
            )
    with open(run / 'stats.jsonl', 'w') as f:
        for kimg, hours in [(0.016, 0.001), (1.04, 0.05), (2.064, 0.1), (3.088, 0.15)]:
            f.write(json.dumps({'kimg': kimg, 'Timing/total_hours': dict(num=1, mean=hours, std=0)}) + '\n')
    return run


def test_curve_is_read_in_kimg_order_with_training_minutes(tmp_path):
    curve = demo_report.read_curve(str(_run_dir(tmp_path)), 'fid1k_full')
    assert [(k, v) for k, _, v in curve] == [(0.016, 210.0), (1, 150.0), (2, 120.0), (3.088, 95.5)]
    assert [round(m, 2) for _, m, _ in curve] == [0.06, 3.0, 6.0, 9.0]


def test_cli_prints_the_final_value_and_draws_the_png(tmp_path):
    run, out = _run_dir(tmp_path), tmp_path / 'out' / 'fid.png'
    result = CliRunner().invoke(demo_report.main, [str(run), '--out', str(out), '--target', '90'])
    assert result.exit_code == 0, result.output
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith('demo: final fid1k_full = 95.5 at 3.09 kimg (9.0 min')
    )
    img = np.asarray(PIL.Image.open(out).convert('RGB'))
    assert img.shape == (400, 640, 3)
    assert ((img[..., 2] > 150) & (img[..., 0] < 50)).sum() > 100  # the blue curve
    assert ((img[..., 0] > 150) & (img[..., 1] < 50)).sum() > 20  # the red target line
    missing = CliRunner().invoke(demo_report.main, [str(run), '--metric', 'kid1k_full', '--out', str(out)])
    assert missing.exit_code != 0 and 'calc_metrics.py --run' in missing.output
