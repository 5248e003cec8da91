"""Tune one method's settings for a forget class: an Optuna study scored against retraining (see --help).

    python tune_method.py --dataset Digits -method SalUn --forget_class 1 --ood_classes 0 9 --tune_trials 20

`run.py --tune` does the same for every method of the list.
"""
from unlearn.store.setting import run_cli
from unlearn.tune.cli import main

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
