"""Unlearn a random share of the training samples (the paper's 2025 sample-wise scenario; `--dataset`,
`--forget_percent`); see `--help` for the methods defined without a forget class."""
from unlearn.stages.forget import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(lambda: main(dataset_default="Cifar20", scenario="sample")))
