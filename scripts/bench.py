"""Benchmarks: one JSON line per case on stdout.

Cases live in scripts/bench_cases/*.py, each exposing `CASES = {name: fn(args) -> dict}`; `args` is an
EasyDict (device, repeat, threads, malloc). Every case runs in
its own child process (unless --no-isolate) so that its peak resident memory (`peak_rss_mb`, from
getrusage) is its own. Examples:
    python scripts/bench.py --list
    python scripts/bench.py --case 'G_demo' --repeat 3
    python scripts/bench.py --case 'G_paper_fwdbwd$' --repeat 1 --malloc tuned
"""

import ctypes
import importlib.util
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time

import click

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CASE_DIR = os.path.join(ROOT, 'scripts', 'bench_cases')

# glibc mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4


def tune_malloc() -> bool:
    """Keep freed memory in glibc's heap instead of unmapping it (large tensors are otherwise mmapped and
    page-faulted afresh at every step; DESIGN.md measured about half of G's CPU time going there).
    Returns False where glibc's mallopt is not available."""
    try:
        libc = ctypes.CDLL('libc.so.6')
    except OSError:
        return False
    ok = libc.mallopt(M_MMAP_MAX, 0) == 1  # never mmap: every block comes from the (reusable) heap
    ok &= libc.mallopt(M_TRIM_THRESHOLD, 1 << 62) == 1  # never give the heap top back to the OS
    return bool(ok)


def discover_cases() -> dict:
    """{case name: fn} from every scripts/bench_cases/*.py that defines CASES."""
    cases = {}
    for fname in sorted(os.listdir(CASE_DIR)):
        if not fname.endswith('.py') or fname.startswith('_'):
            continue
        path = os.path.join(CASE_DIR, fname)
        spec = importlib.util.spec_from_file_location(f'bench_cases.{fname[:-3]}', path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for name, fn in getattr(module, 'CASES', {}).items():
            if name in cases:
                raise click.ClickException(f'bench case "{name}" is defined twice (second time in {path})')
            cases[name] = fn
    return cases


def run_case(name, fn, args) -> dict:
    import torch

    torch.set_num_threads(args['threads'])
    start = time.perf_counter()
    result = fn(args)
    return dict(
        case=name,
        **result,
        peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        case_wall_s=round(time.perf_counter() - start, 2),
        device=args['device'],
        threads=args['threads'],
        malloc=args['malloc'],
        host=platform.node(),
        cpu_count=os.cpu_count(),
    )


@click.command()
@click.option(
    '--case', 'pattern', default='.*', show_default=True, help='Regex selecting cases by name (re.search).'
)
@click.option('--device', default='cpu', show_default=True, help='torch device for the cases.')
@click.option(
    '--repeat', default=3, show_default=True, type=click.IntRange(min=1), help='Timed repetitions (median).'
)
@click.option(
    '--threads', default=2, show_default=True, type=click.IntRange(min=1), help='torch intra-op threads.'
)
@click.option('--malloc', type=click.Choice(['default', 'tuned']), default='tuned', show_default=True,
              help='glibc malloc behaviour: tuned keeps freed memory in the heap (see tune_malloc).')  # fmt: skip
@click.option(
    '--isolate/--no-isolate', default=True, show_default=True, help='Run each case in its own process.'
)
@click.option('--list', 'list_only', is_flag=True, help='List the case names and exit.')
def main(pattern, device, repeat, threads, malloc, isolate, list_only):
    """Run the benchmark cases whose names match --case; print one JSON line per case."""
    sys.path.insert(0, ROOT)
    cases = discover_cases()
    selected = [name for name in cases if re.search(pattern, name)]
    if list_only:
        print('\n'.join(cases))
        return
    if not selected:
        raise click.ClickException(f'no bench case matches --case {pattern!r}; available: {", ".join(cases)}')
    import dnnlib

    args = dnnlib.EasyDict(
        device=device, repeat=repeat, threads=threads, malloc=malloc
    )  # args.x and args['x']
    for name in selected:
        if isolate and len(selected) > 1:
            cmd = [sys.executable, os.path.abspath(__file__), '--case', f'^{re.escape(name)}$', '--device', device,
                   '--repeat', str(repeat), '--threads', str(threads), '--malloc', malloc, '--no-isolate']  # fmt: skip
            rc = subprocess.run(cmd, check=False).returncode
            if rc != 0:
                print(json.dumps(dict(case=name, error=f'child process exited with status {rc}')), flush=True)
            continue
        if malloc == 'tuned':
            args['malloc'] = 'tuned' if tune_malloc() else 'default (mallopt unavailable)'
        print(json.dumps(run_case(name, cases[name], args)), flush=True)


if __name__ == '__main__':
    main()
