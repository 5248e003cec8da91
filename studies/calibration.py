"""Calibrate the Reminiscence Attack's replicated decision on real Digits models and write
docs/calibration.md with its tables and figures. See unlearn/study/calibration.py.

    python studies/calibration.py                   # train what is missing (30 retrain runs), then the report
    python studies/calibration.py --dry-run         # the retrain commands that would run
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unlearn.store.setting import run_cli  # noqa: E402

if __name__ == "__main__":
    from unlearn.study.calibration import main

    sys.exit(run_cli(lambda: main(sys.argv[1:])))
