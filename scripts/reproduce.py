"""Reproduce the paper's ablations at small scale: train every arm with train.py, score its snapshots, draw curves.

Experiments (each arm an ordinary train.py run; same data, same seeds, only the ablated option differs):
  patch-dist  patch-scale distribution: beta / uniform / discrete             (paper Fig. 6)
  hyper-mod   D: hyper-modulated (Eq. 2 output form, public code's input form) / none / concat  (Tab. 2)
  patch-res   the preset's patch size r and r/2                               (Tab. 2)
  all         the three (an arm shared by experiments, the preset's own config, is trained once)

Each arm is trained in --snapshots segments (train.py --kimg k_i, then --resume latest); after each, its
snapshot is scored (FID, SWD; non-flatness at the end) and one line is appended to DIR/results.jsonl. A rerun
of the same command skips what results.jsonl already holds and continues a half-trained arm with --resume.
DIR/summary.md holds the final numbers and whether the paper's signs hold; DIR/<experiment>.png the curves.

Examples:
  python scripts/reproduce.py all --quick --outdir out/reproduce-quick      # pipeline check, ~1 min
  PGRF_FEATURE_NET=~/inception.pt python scripts/reproduce.py all --kimg 1 --outdir out/reproduce
  python scripts/reproduce.py patch-dist --seeds 3 --kimg 4 --outdir out/patch-dist
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import click
import tqdm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, 'scripts')]

import reproduce_eval  # noqa: E402
import reproduce_report  # noqa: E402

from training.loop import run_dir  # noqa: E402
from training.options import config  # noqa: E402

# The options an arm may change. The reference arm of every experiment has the preset's values of all of them.
ABLATED = ('patch_dist', 'hyper_mod', 'hyper_mod_mode', 'patch_cond', 'patch_res')


def experiments(reference: dict) -> list[dict]:
    """The experiments, their arms (label -> option changes from the preset) and the paper's claim (the
    winner arm beats the loser arms). Each arm sets the experiment's options explicitly; the modulated D
    of the claim is the preset's form (the paper's text suggests output, its code input)."""
    patch_res, small = reference['patch_res'], max(reference['patch_res'] // 2, 1)
    return [
        dict(
            name='patch-dist', claim='Fig. 6: annealed Beta patch scales beat uniform annealing',
            arms={
                'beta': dict(patch_dist='beta'), 'uniform': dict(patch_dist='uniform'),
                'discrete': dict(patch_dist='discrete'),
            },
            winner='beta', losers=['uniform'],
        ),
        dict(
            name='hyper-mod',
            claim='Tab. 2: the hyper-modulated D beats a standard D (no patch input / (s, dx, dy) as conditioning)',
            arms={
                'hyper-output': dict(hyper_mod=True, hyper_mod_mode='output'),
                'hyper-input': dict(hyper_mod=True, hyper_mod_mode='input'),
                'none': dict(hyper_mod=False, patch_cond=False),
                'concat': dict(hyper_mod=False, patch_cond=True),
            },
            winner=f'hyper-{reference["hyper_mod_mode"]}', losers=['none', 'concat'],
        ),
        dict(
            name='patch-res', claim=f'Tab. 2: larger patches help ({patch_res}^2 beats {small}^2)',
            arms={f'r{patch_res}': dict(patch_res=patch_res), f'r{small}': dict(patch_res=small)},
            winner=f'r{patch_res}', losers=[f'r{small}'],
        ),
    ]  # fmt: skip


def run_name(options: dict) -> str:
    """A readable name that identifies the trained configuration (arms with equal options share a run)."""
    d = f'hm-{options["hyper_mod_mode"]}' if options['hyper_mod'] else 'nohm'
    pc = '-pc' if options['patch_cond'] else ''
    return f'{options["patch_dist"]}-{d}{pc}-r{options["patch_res"]}'


def train_flags(options: dict) -> list[str]:
    """train.py flags for every ablated option, explicit so that no preset default decides an arm."""
    return [
        '--patch-dist', options['patch_dist'],
        '--hyper-mod' if options['hyper_mod'] else '--no-hyper-mod',
        '--hyper-mod-mode', options['hyper_mod_mode'],
        '--patch-cond' if options['patch_cond'] else '--no-patch-cond',
        '--patch-res', str(options['patch_res']),
    ]  # fmt: skip


def select(name: str, reference: dict) -> tuple[list[dict], dict]:
    """(the chosen experiments with arms mapped to run names, run name -> options) for `name` or 'all';
    `reference` holds the preset's values of ABLATED."""
    chosen, runs = [], {}
    for exp in experiments(reference):
        if name not in ('all', exp['name']):
            continue
        arms = {}
        for label, change in exp['arms'].items():
            options = {**reference, **change}
            arms[label] = run_name(options)
            runs.setdefault(arms[label], options)
        chosen.append(dict(exp, arms=arms))
    return chosen, runs


# ----------------------------------------------------------------------------
# One arm: train segment by segment, score each snapshot.


RESULTS_LOCK = threading.Lock()  # --jobs: arms append to results.jsonl from several threads
CHILDREN: set = set()  # running train.py processes, stopped with the reproduction
STOPPING = threading.Event()  # set by SIGTERM: no new train.py starts


def stop_children(signum, frame) -> None:
    """SIGTERM: pass it on to every train.py (each writes a snapshot and exits), then stop; a rerun resumes."""
    STOPPING.set()
    for proc in list(CHILDREN):
        proc.send_signal(signal.SIGTERM)
    for proc in list(CHILDREN):
        proc.wait()
    raise SystemExit(f'stopped by signal {signum}; rerun the same command to resume')


class ArmFailed(RuntimeError):
    """Training or scoring of one arm failed; the message is one line for the summary."""


KIMG_RE = re.compile(r'^tick\s+\d+\s+kimg\s+([0-9.]+)')


def train_segment(plan: dict, run: str, options: dict, seed: int, target: float, seg_kimg: float) -> None:
    """train.py up to `target` kimg in DIR/runs/<run>-seed<seed>/ (resuming the latest snapshot there);
    a tqdm bar follows its progress lines (4 ticks a segment; a snapshot only at its end); its output is
    appended to DIR/logs/<run>-seed<seed>.log."""
    outdir = os.path.join(plan['outdir'], 'runs', f'{run}-seed{seed}')
    cmd = [sys.executable, os.path.join(ROOT, 'train.py'), '--outdir', outdir, '--cfg', plan['cfg']]
    cmd += ['--data', plan['data']] if plan['data'] else []
    cmd += ['--seed', str(seed), '--kimg', f'{target:g}', '--tick', f'{seg_kimg / 4:g}', '--snap', '1000000']
    cmd += ['--metrics', 'none', '--anneal-kimg', f'{plan["anneal_kimg"]:g}', *train_flags(options)]
    start = 0.0
    if run_dir.find_latest_run(outdir) is not None:
        cmd += ['--resume', 'latest']
        start = reproduce_eval.snapshot_kimg(latest_snapshot(outdir))
    if STOPPING.is_set():
        raise ArmFailed('not started: the reproduction was stopped')
    log_path = os.path.join(plan['outdir'], 'logs', f'{run}-seed{seed}.log')
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    last = ''
    bar = tqdm.tqdm(total=target, initial=start, desc=f'{run} seed {seed}', unit='kimg', bar_format=BAR)
    with open(log_path, 'a', encoding='utf-8', buffering=1) as log, bar:
        log.write(f'$ {" ".join(cmd)}\n')
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=train_env(plan), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        CHILDREN.add(proc)
        for line in proc.stdout:
            log.write(line)
            last = line.strip() or last
            match = KIMG_RE.match(line)
            if match:
                bar.update(min(float(match.group(1)), target) - bar.n)
        CHILDREN.discard(proc)
        if proc.wait() != 0:
            raise ArmFailed(f'train.py exited with {proc.returncode}: {last} (log: {log_path})')


def train_env(plan: dict) -> dict:
    """The environment of train.py: this one, plus one thread per process for --quick's toy tensors (more only
    spin-wait on a shared machine), unless the caller chose OMP_NUM_THREADS."""
    env = dict(os.environ)
    if plan['quick']:
        env.setdefault('OMP_NUM_THREADS', '1')
    return env


BAR = '{desc}: {percentage:3.0f}%|{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}]'


def latest_snapshot(outdir: str) -> str | None:
    latest = run_dir.find_latest_run(outdir)
    return run_dir.list_snapshots(latest)[-1] if latest else None


def process_run(plan: dict, run: str, options: dict, seed: int, done: set, feature_net) -> int:
    """Train and score the segments of (run, seed) that results.jsonl lacks; returns how many were scored."""
    targets = plan['targets']
    outdir = os.path.join(plan['outdir'], 'runs', f'{run}-seed{seed}')
    scored = 0
    for i, target in enumerate(targets):
        if (run, seed, target) in done:
            continue
        snapshot = latest_snapshot(outdir)
        kimg = reproduce_eval.snapshot_kimg(snapshot) if snapshot else 0.0
        if kimg < target:
            train_segment(plan, run, options, seed, target, target - (targets[i - 1] if i else 0.0))
            snapshot = latest_snapshot(outdir)
            kimg = reproduce_eval.snapshot_kimg(snapshot)
            if kimg < target:
                raise ArmFailed(f'train.py stopped at {kimg:g} kimg, before {target:g} (log: {outdir})')
        elif i + 1 < len(targets) and kimg >= targets[i + 1]:
            tqdm.tqdm.write(
                f'{run} seed {seed}: trained past {target:g} kimg before it was scored; skipping it'
            )
            continue
        final = i == len(targets) - 1
        try:
            scores = reproduce_eval.evaluate_snapshot(snapshot, plan['counts'], feature_net, final, True)
        except Exception as err:  # a metric's failure fails this arm only
            raise ArmFailed(f'scoring {snapshot} failed: {type(err).__name__}: {err}') from err
        progress = reproduce_eval.checkpoint.load(snapshot)['progress']
        row = dict(
            run=run, seed=seed, target_kimg=target, kimg=kimg, final=final, **scores,
            train_s=progress['total_time'], snapshot=os.path.relpath(snapshot, plan['outdir']),
            counts=plan['counts'], options=options, timestamp=time.time(),
        )  # fmt: skip
        with RESULTS_LOCK, open(os.path.join(plan['outdir'], 'results.jsonl'), 'a', encoding='utf-8') as f:
            f.write(json.dumps(row) + '\n')
        scored += 1
    return scored


# ----------------------------------------------------------------------------
# The plan of an output folder, and the command line.

QUICK_DEFAULTS = dict(kimg=0.016, snapshots=1, fake_items=16, nonflat_items=16)
REAL_DEFAULTS = dict(kimg=1.0, snapshots=2, fake_items=128, nonflat_items=128)
PLAN_KEYS = ('cfg', 'data', 'targets', 'anneal_kimg', 'counts')  # a rerun in the same folder must match


def make_plan(outdir, cfg, data, quick, **given) -> dict:
    """Resolved options of this reproduction (the quick setup written into outdir when asked)."""
    values = {
        k: (given[k] if given.get(k) is not None else v)
        for k, v in (QUICK_DEFAULTS if quick else REAL_DEFAULTS).items()
    }
    if quick:
        cfg, data = reproduce_eval.make_quick_setup(os.path.join(outdir, 'quick'))
    kimg, n = values['kimg'], values['snapshots']
    targets = [round(kimg * (i + 1) / n, 6) for i in range(n)]
    if round(targets[0] * 1000) < 16:
        raise click.ClickException(
            f'--kimg {kimg:g} over --snapshots {n} gives segments under 16 images: raise --kimg or lower --snapshots'
        )
    anneal = given.get('anneal_kimg') or kimg * 2 / 3  # as the demo preset: annealed over 2 of 3 kimg
    counts = dict(fakes=values['fake_items'], nonflat=values['nonflat_items'])
    plan = dict(
        outdir=outdir, cfg=cfg, data=data and os.path.abspath(data), targets=targets, anneal_kimg=anneal
    )
    plan.update(counts=counts, quick=quick)
    return plan


def check_plan(plan: dict) -> None:
    """A folder holds one plan: refuse to mix results of different lengths, data or sample counts."""
    path = os.path.join(plan['outdir'], 'plan.json')
    mine = {k: plan[k] for k in PLAN_KEYS}
    if os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            stored = json.load(f)
        diff = [k for k in PLAN_KEYS if stored.get(k) != mine[k]]
        if diff:
            k = diff[0]
            raise click.ClickException(
                f'--outdir {plan["outdir"]} holds results with {k}={stored.get(k)!r}, not {mine[k]!r}: '
                'rerun with the options that made it, or choose another --outdir'
            )
    os.makedirs(plan['outdir'], exist_ok=True)
    with open(path, 'w', encoding='utf-8') as f:
        json.dump(mine, f, indent=2)


def preset_reference(cfg: str) -> dict:
    """The preset's values of the ablated options (the reference arm)."""
    try:
        opts = config.resolve(config.load_preset(cfg), {})
    except config.ConfigError as err:
        raise click.ClickException(str(err)) from None
    return {key: opts[key] for key in ABLATED}


def reproduce(
    experiment: str,
    plan: dict,
    seeds: int,
    feature_net=None,
    fid: bool = True,
    train: bool = True,
    jobs: int = 1,
) -> list[str]:
    """Run every (seed, arm) that results.jsonl lacks (unless not `train`; `jobs` arms at a time), then write
    the report; returns the failures."""
    start, load = time.time(), os.getloadavg()[1]
    check_plan(plan)
    net, fid_note = reproduce_eval.resolve_feature_net(feature_net, plan['quick'], fid)
    chosen, runs = select(experiment, preset_reference(plan['cfg']))
    results_path = os.path.join(plan['outdir'], 'results.jsonl')
    done = {(r['run'], r['seed'], r['target_kimg']) for r in reproduce_report.read_results(results_path)}
    failures = []

    def one_arm(seed: int, run: str) -> None:
        try:
            process_run(plan, run, runs[run], seed, done, net)
        except Exception as err:  # one arm's failure must not stop the others
            failures.append(f'{run} seed {seed}: {err}')
            tqdm.tqdm.write(f'FAILED {failures[-1]}')

    # Seeds outermost: a stopped reproduction has every arm at the same depth. Each arm's training is a
    # subprocess and its scoring mostly torch kernels, so threads are enough to run `jobs` arms at once.
    order = [(seed, run) for seed in range(seeds if train else 0) for run in runs]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda item: one_arm(*item), order))
    header = describe(plan, seeds, fid_note, time.time() - start, (load + os.getloadavg()[1]) / 2)
    reproduce_report.write_report(plan['outdir'], chosen, header, failures)
    return failures


def describe(plan: dict, seeds: int, fid_note: str, wall_s: float, load: float) -> list[str]:
    c = plan['counts']
    fid = f' of {c["fakes"]} fakes against all reals (biased up at this count: compare arms only)'
    return [
        f'- preset `{os.path.basename(plan["cfg"])}`{" (--quick toy setup)" if plan["quick"] else ""}, '
        f'{seeds} seed(s), scored at kimg {", ".join(f"{t:g}" for t in plan["targets"])}, '
        f'patch-scale annealing over {plan["anneal_kimg"]:.3g} kimg',
        f'- {fid_note}{fid if fid_note.startswith("FID on") else ""}; SWD of the same fakes and as many reals; '
        f'non-flatness of {c["nonflat"]} fakes at the end',
        f'- wall time of the last invocation: {wall_s:.0f} s on {os.cpu_count()} CPUs at a load average of about '
        f'{load:.1f} (train s and eval s below are per arm, all invocations)',
    ]


# fmt: off
@click.command(context_settings=dict(max_content_width=110))
@click.argument('experiment', type=click.Choice(['patch-dist', 'hyper-mod', 'patch-res', 'all']))
@click.option('--quick', is_flag=True, help='Toy setup written into --outdir, a few steps per arm (pipeline check).')
@click.option('--seeds', type=click.IntRange(min=1), default=1, show_default=True, help='Seeds 0..N-1 per arm.')
@click.option('--kimg', type=click.FloatRange(min=0, min_open=True), help='Training length per arm  [default: 1; --quick: 0.016]')
@click.option('--snapshots', type=click.IntRange(min=1), help='Scored snapshots per arm, evenly spaced  [default: 2; --quick: 1]')
@click.option('--outdir', default='out/reproduce', show_default=True, help='Results, runs, logs, summary and plots.', metavar='DIR')
@click.option('--cfg', default='demo', show_default=True, help='train.py preset of every arm (ignored by --quick).', metavar='NAME')
@click.option('--data', help="Dataset  [default: the preset's]", metavar='PATH')
@click.option('--anneal-kimg', type=click.FloatRange(min=0, min_open=True), help='Patch-scale annealing T  [default: 2/3 of --kimg]')
@click.option('--fake-items', type=click.IntRange(min=2), help='Fakes per FID and SWD (rendered once)  [default: 128; --quick: 16]')
@click.option('--nonflat-items', type=click.IntRange(min=2), help='Fakes for non-flatness  [default: 128; --quick: 16]')
@click.option('--jobs', type=click.IntRange(min=1), default=1, show_default=True, help='Arms trained and scored at once.')
@click.option('--report-only', is_flag=True, help='Only redraw summary.md and the plots from results.jsonl.')
@click.option('--fid/--no-fid', default=True, show_default=True, help='Score FID (needs the Inception weights).')
@click.option('--feature-net', help='FID Inception weights  [default: $PGRF_FEATURE_NET, else the download cache]', metavar='PATH')
# fmt: on
def main(experiment, quick, seeds, outdir, cfg, data, jobs, report_only, fid, feature_net, **given):
    """Train and score every arm of EXPERIMENT; write results.jsonl, summary.md and <experiment>.png."""
    plan = make_plan(outdir, cfg, data, quick, **given)
    signal.signal(signal.SIGTERM, stop_children)
    try:
        failures = reproduce(experiment, plan, seeds, feature_net, fid, train=not report_only, jobs=jobs)
    except OSError as err:  # no FID weights for a real run: before any training
        raise click.ClickException(str(err)) from None
    click.echo(f'Wrote {os.path.join(outdir, "summary.md")} and the plots')
    if failures:
        raise click.ClickException(
            f'{len(failures)} arm(s) failed (see summary.md); rerun the same command to retry them'
        )


if __name__ == '__main__':
    main()
