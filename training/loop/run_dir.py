"""Run directories (<outdir>/<NNNNN>-<desc>/), their snapshots, and a log that tees to a file.

The log never replaces sys.stdout: `RunLog.print` writes to stdout and appends to <run_dir>/log.txt.
"""

import json
import os
import re
import traceback

from dnnlib import registry

SNAPSHOT_RE = re.compile(r'^network-snapshot-(\d+)(?:\.(\d{3}))?\.pt$')  # kimg, then images past it
RUN_RE = re.compile(r'^(\d{5})-')


class TrainingStopped(RuntimeError):
    """Training stopped early for a reason the user must read (what happened, what to do next)."""


def list_runs(outdir: str) -> list[str]:
    """Run directories under `outdir`, sorted by their number."""
    if not os.path.isdir(outdir):
        return []
    runs = [(int(m.group(1)), d) for d in os.listdir(outdir) if (m := RUN_RE.match(d))]
    return [os.path.join(outdir, d) for _, d in sorted(runs) if os.path.isdir(os.path.join(outdir, d))]


def make_run_dir(outdir: str, desc: str) -> str:
    """Create <outdir>/<NNNNN>-<desc> with the next free number (never reuses one)."""
    os.makedirs(outdir, exist_ok=True)
    while True:
        ids = [int(m.group(1)) for d in os.listdir(outdir) if (m := RUN_RE.match(d))]
        run_dir = os.path.join(outdir, f'{max(ids, default=-1) + 1:05d}-{desc}')
        try:
            os.makedirs(run_dir)  # fails if another launcher took this number meanwhile
            return run_dir
        except FileExistsError:
            continue


def snapshot_name(cur_nimg: int) -> str:
    """network-snapshot-<kimg>.pt at whole kimg (StyleGAN's names); network-snapshot-<kimg>.<images>.pt
    in between, so snapshots inside one kimg (small runs, a stop signal) never overwrite each other."""
    kimg, rest = divmod(int(cur_nimg), 1000)
    return f'network-snapshot-{kimg:06d}.pt' if rest == 0 else f'network-snapshot-{kimg:06d}.{rest:03d}.pt'


def snapshot_nimg(path: str) -> int | None:
    """The cur_nimg a snapshot's file name encodes (None if it is not a snapshot name)."""
    m = SNAPSHOT_RE.match(os.path.basename(path))
    return None if m is None else int(m.group(1)) * 1000 + int(m.group(2) or 0)


def list_snapshots(run_dir: str) -> list[str]:
    """Snapshot files of a run, oldest first (by the images their names encode, then modification time)."""
    if not os.path.isdir(run_dir):
        return []
    found = []
    for name in os.listdir(run_dir):
        nimg = snapshot_nimg(name)
        if nimg is not None:
            path = os.path.join(run_dir, name)
            found.append((nimg, os.path.getmtime(path), path))
    return [p for _, _, p in sorted(found)]


def find_latest_run(outdir: str) -> str | None:
    """The highest-numbered run under `outdir` that holds at least one snapshot."""
    for run_dir in reversed(list_runs(outdir)):
        if list_snapshots(run_dir):
            return run_dir
    return None


def resolve_resume(resume: str, outdir: str) -> tuple[str, str | None]:
    """Interpret --resume: 'latest' or a run directory -> (run_dir, None) to continue in place;
    a snapshot file -> (snapshot_path, 'file') for a new run starting from that state.

    Raises FileNotFoundError with a one-line message when there is nothing to resume from.
    """
    if resume == 'latest':
        run_dir = find_latest_run(outdir)
        if run_dir is None:
            raise FileNotFoundError(f'--resume latest: no run with a snapshot under --outdir {outdir}')
        return run_dir, None
    if os.path.isdir(resume):
        if not list_snapshots(resume):
            raise FileNotFoundError(f'--resume {resume}: this run directory holds no network-snapshot-*.pt')
        return resume, None
    if os.path.isfile(resume):
        return resume, 'file'
    raise FileNotFoundError(f'--resume {resume}: no such file or run directory (or use --resume latest)')


class RunLog:
    """Print to stdout and append the same lines to a log file (rank 0); silent when `enabled` is False."""

    def __init__(self, path: str | None, enabled: bool = True):
        self.path, self.enabled = path, enabled
        self.file = open(path, 'a', encoding='utf-8', buffering=1) if path and enabled else None  # noqa: SIM115

    def print(self, *parts) -> None:
        if not self.enabled:
            return
        text = ' '.join(str(p) for p in parts)
        print(text, flush=True)
        if self.file is not None:
            self.file.write(text + '\n')

    def exception(self, err: BaseException) -> None:
        """Write a traceback to the log file only (the caller decides what the terminal shows)."""
        if self.file is not None:
            self.file.write(''.join(traceback.format_exception(type(err), err, err.__traceback__)))

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None


def write_options(run_dir: str, opts: dict) -> None:
    with open(os.path.join(run_dir, 'training_options.json'), 'w', encoding='utf-8') as f:
        json.dump(opts, f, indent=2, sort_keys=True)


def read_options(run_dir: str) -> dict:
    """<run_dir>/training_options.json, refused (ValueError, one line) if it is not JSON or names a class
    outside dnnlib/registry.py: everything the loop builds comes from these options."""
    path = os.path.join(run_dir, 'training_options.json')
    with open(path, encoding='utf-8') as f:
        try:
            opts = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not valid JSON ({err}); fix it or copy it from a backup') from None
    registry.check_specs(opts, path)
    return opts
