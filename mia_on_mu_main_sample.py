"""Plain LiRA and the sample-wise Reminiscence Attack on a model of forget_sample_main.py (`--dataset`);
see `--help`."""
from unlearn.stages.sample_attack import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(lambda: main(dataset_default="Cifar20")))
