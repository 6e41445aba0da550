"""Run train.py's CLI as one torchrun rank and record how it exited in <dir>/rank<RANK>.exit.

torchrun itself exits 1 when it is sent SIGTERM (torch elastic raises SignalException in the agent),
so the exit status of each rank, which is PGRF's part, is only visible from inside the rank.
Usage: torchrun ... tests/_train_rank.py EXIT_DIR [train.py options]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import train  # noqa: E402

if __name__ == '__main__':
    exit_dir, args = sys.argv[1], sys.argv[2:]
    code = 1
    try:
        train.main(args, prog_name='train.py')
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        with open(os.path.join(exit_dir, f'rank{os.environ.get("RANK", "0")}.exit'), 'w') as f:
            f.write(str(code))
    sys.exit(code)
