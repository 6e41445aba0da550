"""The demo's learning curve: a metric of every snapshot of a run, printed as a table and drawn as a PNG.

    python scripts/demo_report.py RUN_DIR --metric fid1k_full --out demo-out/fid.png

Reads RUN_DIR/metric-<metric>.jsonl (written by calc_metrics.py) and the training time of each snapshot
from RUN_DIR/stats.jsonl; prints `kimg  minutes  value` per snapshot and the final value last.
The plot is drawn with Pillow alone (no plotting library needed).
"""

import json
import os
import sys

import click
from PIL import Image, ImageDraw

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from training.loop import run_dir as run_dir_lib  # noqa: E402

SIZE, MARGIN = (640, 400), (70, 30, 30, 50)  # image size; left, top, right, bottom margins


def read_curve(run_dir: str, metric: str) -> list[tuple[float, float, float]]:
    """[(kimg, training minutes, value)] of every evaluated snapshot, in kimg order."""
    path = os.path.join(run_dir, f'metric-{metric}.jsonl')
    if not os.path.isfile(path):
        raise click.ClickException(
            f'{path} is missing: run calc_metrics.py --run {run_dir} --metrics {metric}'
        )
    minutes = {}  # images shown when a tick ended -> training minutes by then
    stats_path = os.path.join(run_dir, 'stats.jsonl')
    if os.path.isfile(stats_path):
        with open(stats_path) as f:
            for line in f:
                stats = json.loads(line)
                hours = stats.get('Timing/total_hours', {})
                minutes.setdefault(round(float(stats['kimg']) * 1000), 60 * float(hours.get('mean', 0.0)))
    curve = {}
    with open(path) as f:
        for line in f:
            entry = json.loads(line)
            nimg = run_dir_lib.snapshot_nimg(entry['snapshot_pkl'])  # whole kimg, or kimg.images inside one
            if nimg is None:
                raise click.ClickException(f'{path}: {entry["snapshot_pkl"]!r} is not a snapshot name')
            results = entry['results']
            value = results.get(metric, results.get(f'{metric}_avg', next(iter(results.values()))))
            # The training time of the tick closest to the snapshot (snapshots are written at tick ends).
            near = min(minutes, key=lambda n: abs(n - nimg)) if minutes else None
            curve[nimg] = (nimg / 1000, minutes.get(near, float('nan')), float(value))  # the latest line wins
    return [curve[k] for k in sorted(curve)]


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = (hi - lo) / (count - 1) if hi > lo else 1.0
    return [lo + i * step for i in range(count)]


def draw_curve(curve, metric: str, path: str, target: float | None = None) -> None:
    """A line plot of value against kimg (and a dashed target line), saved as a PNG."""
    img = Image.new('RGB', SIZE, 'white')
    d = ImageDraw.Draw(img)
    left, top, right, bottom = MARGIN
    w, h = SIZE[0] - left - right, SIZE[1] - top - bottom
    xs, ys = [c[0] for c in curve], [c[2] for c in curve] + ([target] if target is not None else [])
    x_hi = max(max(xs), 1.0)
    y_lo, y_hi = 0.0, max(ys) * 1.1
    to_px = lambda x, y: (left + w * x / x_hi, top + h * (1 - (y - y_lo) / (y_hi - y_lo)))  # noqa: E731
    d.rectangle([left, top, left + w, top + h], outline='black')
    for x in _ticks(0, x_hi):
        px, _ = to_px(x, y_lo)
        d.line([px, top + h, px, top + h + 4], fill='black')
        d.text((px - 8, top + h + 8), f'{x:.1f}', fill='black')
    for y in _ticks(y_lo, y_hi):
        _, py = to_px(0, y)
        d.line([left - 4, py, left, py], fill='black')
        d.text((left - 40, py - 6), f'{y:.0f}', fill='black')
    d.text((left + w / 2 - 20, SIZE[1] - 20), 'kimg', fill='black')
    d.text((left, 8), f'{metric} of the demo snapshots (lower is better)', fill='black')
    if target is not None:
        _, py = to_px(0, target)
        for x0 in range(left, left + w, 12):
            d.line([x0, py, min(x0 + 6, left + w), py], fill=(200, 0, 0))
        d.text((left + w - 90, py - 14), f'target {target:g}', fill=(200, 0, 0))
    points = [to_px(x, y) for x, _, y in curve]
    if len(points) > 1:
        d.line(points, fill=(0, 70, 200), width=2)
    for px, py in points:
        d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(0, 70, 200))
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    img.save(path)


@click.command()
@click.argument('run_dir', type=click.Path(exists=True, file_okay=False))
@click.option('--metric', default='fid1k_full', show_default=True, help='Metric name (metric-<name>.jsonl).')
@click.option('--out', 'out_path', required=True, help='PNG to write.')
@click.option('--target', type=float, default=None, help='Draw a dashed line at this value.')
def main(run_dir, metric, out_path, target):
    """Print and plot a metric across the snapshots of RUN_DIR."""
    curve = read_curve(run_dir, metric)
    if not curve:
        raise click.ClickException(f'no {metric} results in {run_dir}')
    print(f'{"kimg":>6} {"train min":>9} {metric:>12}')
    for kimg, minutes, value in curve:
        print(f'{kimg:6.3f} {minutes:9.1f} {value:12.2f}')
    draw_curve(curve, metric, out_path, target)
    kimg, minutes, value = curve[-1]
    print(
        f'demo: final {metric} = {value:.1f} at {kimg:.3g} kimg ({minutes:.1f} min of training); plot: {out_path}'
    )


if __name__ == '__main__':
    sys.exit(main())
