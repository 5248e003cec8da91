"""Reminiscence Attack on an unlearned Cifar100 model (`--dataset` selects another dataset)."""
from unlearn.stages.attack import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(lambda: main(dataset_default="Cifar100")))
