"""results.jsonl -> summary.md (final metrics per arm, the paper's signs) and one PNG of curves per experiment.

Used by scripts/reproduce.py; it reads only results.jsonl, so a report can be redrawn at any time.
An experiment is a dict(name, claim, winner, losers, arms={label: run name}); a result line is one scored
snapshot: dict(run, seed, target_kimg, kimg, fid, swd, nonflat, final, train_s, eval_s, ...).
"""

import json
import math
import os

import numpy as np


def read_results(path: str) -> list[dict]:
    """The lines of results.jsonl, the last one per (run, seed, target kimg) (a snapshot scored again wins;
    a truncated last line, from a killed run, is ignored)."""
    if not os.path.isfile(path):
        return []
    rows = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[(row['run'], row['seed'], row['target_kimg'])] = row
    return list(rows.values())


def primary_metric(rows: list[dict]) -> str:
    """'fid' when every scored snapshot has one, else 'swd' (no FID network was available)."""
    return 'fid' if rows and all(r.get('fid') is not None for r in rows) else 'swd'


def final_rows(rows: list[dict], run: str) -> list[dict]:
    """The final snapshot of each seed of `run` (one row per seed, seed order)."""
    finals = {r['seed']: r for r in rows if r['run'] == run and r.get('final')}
    return [finals[s] for s in sorted(finals)]


def mean_spread(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    x = np.asarray(values, dtype=np.float64)
    return float(x.mean()), (float(x.std(ddof=1)) if len(x) > 1 else None)


def fmt(mean: float | None, spread: float | None = None, digits: int = 2) -> str:
    if mean is None or not math.isfinite(mean):
        return 'n/a'
    return f'{mean:.{digits}f}' + (f' ± {spread:.{digits}f}' if spread is not None else '')


# ----------------------------------------------------------------------------
# The paper's signs.


def judge_claim(exp: dict, rows: list[dict], metric: str) -> str:
    """One line: does the winner arm have the lower final `metric` than every loser arm, and by how much?"""
    win = [r[metric] for r in final_rows(rows, exp['arms'][exp['winner']])]
    if not win:
        return f'**not measured**: the {exp["winner"]} arm has no final snapshot'
    parts, verdicts = [], []
    w_mean, w_std = mean_spread(win)
    for loser in exp['losers']:
        lose = [r[metric] for r in final_rows(rows, exp['arms'][loser])]
        if not lose:
            parts.append(f'{loser}: not measured')
            verdicts.append(None)
            continue
        l_mean, l_std = mean_spread(lose)
        gap = l_mean - w_mean
        verdicts.append(gap > 0)
        if w_std is None or l_std is None:
            strength = '1 seed, so no spread to judge the gap against'
        else:
            se = math.sqrt(w_std**2 / len(win) + l_std**2 / len(lose))
            strength = (
                'beyond 2 standard errors' if abs(gap) > 2 * se else 'within 2 standard errors: not decided'
            )
        parts.append(f'{exp["winner"]} {w_mean:.2f} vs {loser} {l_mean:.2f} (gap {gap:+.2f}; {strength})')
    if None in verdicts:
        head = '**partly measured**'
    elif all(verdicts):
        head = '**holds**'
    elif not any(verdicts):
        head = '**does not hold**'
    else:
        head = '**mixed**'
    return f'{head} by final {metric.upper()}: ' + '; '.join(parts)


# ----------------------------------------------------------------------------
# summary.md


def arm_table(exp: dict, rows: list[dict]) -> list[str]:
    lines = [
        '| arm | run | seeds | final kimg | FID | SWD (x1e3) | nonflat (nats) | train s | eval s |',
        '| --- | --- | --- | --- | --- | --- | --- | --- | --- |',
    ]
    for label, run in exp['arms'].items():
        fin = final_rows(rows, run)
        if not fin:
            lines.append(f'| {label} | `{run}` | 0 | n/a | n/a | n/a | n/a | n/a | n/a |')
            continue
        cells = []
        for key, digits in (('kimg', 3), ('fid', 2), ('swd', 2), ('nonflat', 3), ('train_s', 0)):
            values = [r[key] for r in fin if r.get(key) is not None]
            cells.append(fmt(*mean_spread(values), digits=digits) if values else 'n/a')
        eval_s = sum(r['eval_s'] for r in rows if r['run'] == run)
        lines.append(f'| {label} | `{run}` | {len(fin)} | ' + ' | '.join(cells) + f' | {eval_s:.0f} |')
    return lines


def write_summary(
    path: str, experiments: list[dict], rows: list[dict], header: list[str], failures: list[str]
):
    metric = primary_metric(rows)
    lines = ["# Reproduction of the paper's ablations at small scale", '', *header, '']
    if metric == 'swd':
        lines += ['The signs below are judged by SWD: no FID network was available.', '']
    for exp in experiments:
        lines += [f'## {exp["name"]}: {exp["claim"]}', '', *arm_table(exp, rows), '']
        lines += [f'Sign: {judge_claim(exp, rows, metric)}', '', f'Curves: `{exp["name"]}.png`', '']
    lines += [
        'Values are mean ± sample std over seeds (no ± with one seed); lower FID and SWD are better.',
        '',
    ]
    if failures:
        lines += ['## Failed in the last invocation (rerun the same command to retry)', '']
        lines += [f'- {f}' for f in failures] + ['']
    with open(path, 'w', encoding='utf-8') as f:
        f.write('\n'.join(lines))


# ----------------------------------------------------------------------------
# Curves.


def curve(rows: list[dict], run: str, metric: str):
    """kimg targets and, per target, the mean, min and max of `metric` over seeds."""
    by_target: dict = {}
    for r in rows:
        if r['run'] == run and r.get(metric) is not None:
            by_target.setdefault(r['target_kimg'], []).append(r[metric])
    targets = sorted(by_target)
    values = [np.asarray(by_target[t]) for t in targets]
    return (
        np.asarray(targets),
        np.asarray([v.mean() for v in values]),
        np.asarray([v.min() for v in values]),
        np.asarray([v.max() for v in values]),
    )


def plot_experiment(path: str, exp: dict, rows: list[dict]) -> None:
    """FID (if measured) and SWD against kimg: one curve per arm (mean over seeds), the seeds' range shaded."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    metrics = [m for m in ('fid', 'swd') if any(r.get(m) is not None for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for label, run in exp['arms'].items():
            x, mean, lo, hi = curve(rows, run, metric)
            if len(x) == 0:
                continue
            (line,) = ax.plot(x, mean, marker='o', label=label)
            if np.any(hi > lo):
                ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.2)
        ax.set_xlabel('kimg (real images shown to D, thousands)')
        ax.set_ylabel({'fid': 'FID', 'swd': 'SWD (x1e3)'}[metric])
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f'{exp["name"]}: {exp["claim"]}', fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_report(outdir: str, experiments: list[dict], header: list[str], failures: list[str]) -> list[dict]:
    """summary.md and <experiment>.png in `outdir` from its results.jsonl; returns the result rows."""
    rows = read_results(os.path.join(outdir, 'results.jsonl'))
    write_summary(os.path.join(outdir, 'summary.md'), experiments, rows, header, failures)
    for exp in experiments:
        plot_experiment(os.path.join(outdir, f'{exp["name"]}.png'), exp, rows)
    return rows
