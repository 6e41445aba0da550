"""Benchmarks: one JSON line per case on stdout.

Cases live in scripts/bench_cases/*.py, each exposing `CASES = {name: fn(args) -> dict}`; `args` is an
EasyDict (device, repeat, threads, malloc). Every case runs in
its own child process (unless --no-isolate) so that its peak resident memory (`peak_rss_mb`, from
getrusage) is its own. Examples:
    python scripts/bench.py --list
    python scripts/bench.py --case 'G_demo' --repeat 3
    python scripts/bench.py --case 'G_paper_fwdbwd$' --repeat 1 --malloc default
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


def setup_allocator(mode: str) -> str:
    """Choose how large CPU tensors get their memory; call before torch allocates anything.

    Large tensors are mmapped fresh by glibc and page-faulted 4 KB at a time at every step (about half
    of G's CPU time, measured on a 2-core CPU). 'thp' makes PyTorch's CPU allocator request transparent
    huge pages (THP_MEM_ALLOC_ENABLE=1; 2 MB pages: ~24x fewer faults on a 268 MB activation, same peak
    memory); 'heap' disables glibc's mmap so freed blocks are reused (fewer faults, but fragmentation
    raised the peak resident memory by 1.7-3x in our measurements); 'default' changes nothing.
    """
    if mode == 'thp':
        os.environ['THP_MEM_ALLOC_ENABLE'] = '1'
        return mode
    if mode == 'heap':
        try:
            libc = ctypes.CDLL('libc.so.6')
        except OSError:
            return 'default (glibc mallopt unavailable)'
        ok = libc.mallopt(M_MMAP_MAX, 0) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1 << 62) == 1
        return mode if ok else 'default (mallopt refused)'
    return mode


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
        minor_page_faults=resource.getrusage(resource.RUSAGE_SELF).ru_minflt,
        case_wall_s=round(time.perf_counter() - start, 2),
        device=args['device'],
        threads=args['threads'],
        malloc=args['malloc'],
        omp_wait_policy=os.environ.get('OMP_WAIT_POLICY', 'default'),
        code_root=args.get('code_root') or ROOT,
        load_avg_1min=os.getloadavg()[0],
        host=platform.node(),
        cpu_count=os.cpu_count(),
    )


# Where a checkout from before the package layout kept the modules the cases import (today's name -> then).
FLAT_LAYOUT = {
    'training.options': 'training', 'training.loop': 'training', 'training.networks': 'training', 'export': 'training',
    'training.options.config': 'training.config', 'training.options.derive': 'training.derive',
    'training.loop.train_step': 'training.train_step', 'training.loop.training_loop': 'training.training_loop',
    'training.networks.generator': 'training.generator', 'training.networks.discriminator': 'training.discriminator',
    'export.generate': 'training.export_gen', 'export.geometry': 'training.geometry',
}  # fmt: skip


def alias_flat_layout(code_root: str) -> None:
    """--code-root of an older checkout (every module flat in training/): the cases' imports of today's
    packages find its modules under their old names."""
    if os.path.isdir(os.path.join(code_root, 'training', 'options')):
        return
    import importlib

    for new, old in FLAT_LAYOUT.items():
        if old == 'training':
            sys.modules[new] = type(sys)(new)  # an empty package; its modules are set below
    for new, old in FLAT_LAYOUT.items():
        if old != 'training':
            module = importlib.import_module(old)
            sys.modules[new] = module
            package, _, short = new.rpartition('.')
            setattr(sys.modules[package], short, module)


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
@click.option('--malloc', type=click.Choice(['thp', 'heap', 'default']), default='thp', show_default=True,
              help='How large CPU tensors get memory (see setup_allocator).')  # fmt: skip
@click.option('--wait-policy', 'wait_policy', type=click.Choice(['passive', 'default']), default='passive', show_default=True,
              help="OpenMP idle threads sleep (passive, what train.py sets) or the library's default (spin, then sleep).")  # fmt: skip
@click.option(
    '--isolate/--no-isolate', default=True, show_default=True, help='Run each case in its own process.'
)
@click.option(
    '--precision',
    type=click.Choice(['auto', 'fp32', 'bf16', 'fp16']),
    help="Training cases: the --precision option  [default: the preset's]",
)
@click.option(
    '--g-fp32',
    'g_fp32',
    type=bool,
    metavar='BOOL',
    help="Training cases: keep G's synthesis fp32 (the paper's setting)",
)
@click.option(
    '--reuse-fakes',
    'reuse_fakes',
    type=bool,
    metavar='BOOL',
    help="Training cases: Dmain trains on Gmain's fakes (one G forward per step)  [default: the preset's]",
)
@click.option(
    '--checkpoint',
    type=click.Choice(['auto', 'on', 'off']),
    help="Training cases: gradient checkpointing of G's synthesis",
)
@click.option(
    '--profile',
    is_flag=True,
    default=None,
    help='Training cases: print torch.profiler tables per phase (stderr).',
)
@click.option(
    '--code-root',
    'code_root',
    metavar='DIR',
    help='Import the project from DIR (another checkout, e.g. main) with these cases.',
)
@click.option('--list', 'list_only', is_flag=True, help='List the case names and exit.')
def main(pattern, device, repeat, threads, malloc, wait_policy, isolate, list_only, code_root, **options):
    """Run the benchmark cases whose names match --case; print one JSON line per case."""
    malloc = setup_allocator(malloc)  # before any case module imports torch
    sys.path.insert(0, ROOT)
    from torch_utils import threads as threads_lib

    threads_lib.configure(threads, passive=wait_policy == 'passive')
    if code_root is not None:  # after this harness's own helpers are imported, the project comes from there
        sys.path.insert(0, os.path.abspath(code_root))
        for name in [m for m in sys.modules if m.split('.')[0] in ('torch_utils', 'dnnlib')]:
            del sys.modules[name]
        alias_flat_layout(code_root)
    cases = discover_cases()
    selected = [name for name in cases if re.search(pattern, name)]
    if list_only:
        print('\n'.join(cases))
        return
    if not selected:
        raise click.ClickException(f'no bench case matches --case {pattern!r}; available: {", ".join(cases)}')
    import dnnlib

    args = dnnlib.EasyDict(
        device=device, repeat=repeat, threads=threads, malloc=malloc, code_root=code_root, **options
    )  # args.x and args['x']
    flag = lambda k: f'--{k.replace("_", "-")}'  # noqa: E731
    option_args = [
        a
        for k, v in options.items()
        if v is not None
        for a in ([flag(k)] if k == 'profile' else [flag(k), str(v)])
    ]
    for name in selected:
        if isolate and len(selected) > 1:
            cmd = [sys.executable, os.path.abspath(__file__), '--case', f'^{re.escape(name)}$', '--device', device,
                   '--repeat', str(repeat), '--threads', str(threads), '--malloc', malloc.split(' ')[0], '--wait-policy', wait_policy, '--no-isolate', *option_args, *(['--code-root', code_root] if code_root else [])]  # fmt: skip
            rc = subprocess.run(cmd, check=False).returncode
            if rc != 0:
                print(json.dumps(dict(case=name, error=f'child process exited with status {rc}')), flush=True)
            continue
        print(json.dumps(run_case(name, cases[name], args)), flush=True)


if __name__ == '__main__':
    main()
