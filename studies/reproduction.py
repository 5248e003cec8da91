"""Reproduce the paper's three claims at CPU scale (Digits, FashionMNIST; seeds 0-2) and write
docs/reproduction.md with its tables and figures. See unlearn/study.py.

    python studies/reproduction.py                      # run what is missing, then write the report
    python studies/reproduction.py --report-only        # rebuild tables and figures from finished runs
    python studies/reproduction.py --datasets Digits --parts grid
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unlearn.store.setting import run_cli  # noqa: E402

if __name__ == "__main__":
    from unlearn.study.cli import main

    sys.exit(run_cli(lambda: main(sys.argv[1:])))
