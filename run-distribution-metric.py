"""Distribution metrics (intra-class variance, silhouette, KDE overlap) and t-SNE plots of unlearned models."""
from unlearn.stages.distribution import main
from unlearn.store.setting import run_cli

if __name__ == "__main__":
    raise SystemExit(run_cli(main))
