"""Pretrain on Cifar100 (paper defaults in config.py); `--dataset` selects another dataset."""
from unlearn.stages.pretrain import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(lambda: main(dataset_default="Cifar100")))
