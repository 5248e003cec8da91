"""Unlearn one class of Cifar20 (`--dataset` selects another dataset); see `--help` for the methods."""
from unlearn.stages.forget import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(lambda: main(dataset_default="Cifar20")))
