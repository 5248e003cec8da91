"""The CIFAR-20 pipeline on a GPU in minutes, on synthetic data in the official CIFAR-100 file format.

For machines without the real dataset (or to check a CUDA install quickly): writes
``cifar-100-python/{train,test,meta}`` pickles whose images are a fixed random
pattern per fine class plus noise (learnable, so unlearning and the attack have
something to act on; coarse label = fine // 5, not the official map), then runs
``run.py``'s pipeline (pretrain, a method list, the Reminiscence Attack, the
distribution metrics, the summary) with reduced epochs and trials, and times a
ResNet18 relearning curve. The numbers it prints say the code paths work on the
device; they are not CIFAR results.

    python benchmarks/gpu_check.py --out /tmp/gpu_check [--per-class 60] [--methods ...]
"""
import argparse
import pickle
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

METHODS = ["baseline", "retrain", "finetune", "negative_grad", "amnesiac", "badteacher", "ssd_tuning", "Wfisher",
           "FisherForgetting", "UNSIR", "FT_prune", "SalUn", "SCRUB", "boundary_shrink", "negative_grad_our",
           "SalUn_our", "Wfisher_our"]


def write_fake_cifar100(root: Path, *, per_class_train: int, per_class_test: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    templates = rng.integers(0, 256, size=(100, 3072)).astype(np.float32)
    base = root / "cifar-100-python"
    base.mkdir(parents=True, exist_ok=True)
    for name, per in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per)
        noise = rng.normal(0, 60, size=(len(fine), 3072))
        data = np.clip(0.6 * templates[fine] + 0.4 * 128 + noise, 0, 255).astype(np.uint8)
        obj = {"filenames": [f"{name}_{i}.png" for i in range(len(fine))], "fine_labels": fine.tolist(),
               "coarse_labels": (fine // 5).tolist(), "data": data}
        with open(base / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)
    meta = {"fine_label_names": [f"fine_{i}" for i in range(100)],
            "coarse_label_names": [f"coarse_{i}" for i in range(20)]}
    with open(base / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def time_relearn_curves(device: str, steps: int = 75, batch: int = 32) -> tuple[float, float]:
    """Seconds per ResNet18 relearning curve (CIFAR-size inputs, 15-sample steps, 25 candidates):
    one curve at a time, and ``batch`` curves vectorised together (per curve)."""
    import torch

    from datasets.splits import TensorSet
    from models import get_model
    from unlearn.stages.attack import relearn_curve, relearn_curves

    model = get_model("ResNet18", 15).to(device)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(500, 3, 32, 32, device=device)
    y = torch.randint(0, 15, (500,), device=device)
    retain = TensorSet(x, y, torch.arange(500, device=device), "retain")
    cand_x, cand_y = x[:25], torch.zeros(25, dtype=torch.long, device=device)
    kw = dict(lr=0.01, steps=steps, retain_per_step=14)

    def timed(fn, reps):
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / reps

    one = timed(lambda: relearn_curve(model, state, cand_x, cand_y, retain, seed=0, **kw), 3)
    curves = [(state, cand_x, cand_y, s) for s in range(batch)]
    many = timed(lambda: relearn_curves(model, curves, retain, **kw), 1) / batch
    return one, many


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="folder for the fake data and the log files")
    p.add_argument("--per-class", type=int, default=60, help="training images per fine class")
    p.add_argument("--pretrain-epochs", type=int, default=4)
    p.add_argument("--methods", nargs="+", default=METHODS)
    p.add_argument("--trials", type=int, default=4)
    p.add_argument("--jobs", type=int, default=None)
    p.add_argument("--net", default="ResNet18")
    p.add_argument("--skip-timing", action="store_true")
    p.add_argument("--stages", nargs="+", default=["pretrain", "forget", "attack", "distribution"])
    args = p.parse_args()
    import torch

    from unlearn.launcher import main as launch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"device: {torch.cuda.get_device_name(0) if device == 'cuda' else 'cpu'}, torch {torch.__version__}")
    out = Path(args.out)
    t0 = time.perf_counter()
    write_fake_cifar100(out / "data", per_class_train=args.per_class, per_class_test=max(args.per_class // 5, 2))
    print(f"fake CIFAR-100 written ({time.perf_counter() - t0:.1f}s)", flush=True)
    if not args.skip_timing:
        one, many = time_relearn_curves(device)
        print(f"ResNet18 relearning curve, 75 steps: {one:.3f}s one at a time, {many:.3f}s each when 32 are "
              f"vectorised ({one / many:.1f}x)", flush=True)
    methods = [(m, None, None) for m in args.methods]
    defaults = dict(net=args.net, dataset="Cifar20", classes=None, forget_class=None, seeds=[0], weight_path=None,
                    methods=methods, attack=dict(trials=args.trials, num_ood_dataset=2, steps=40),
                    stages=args.stages, python_file=None, jobs=args.jobs)
    t0 = time.perf_counter()
    rc = launch(["--data-root", str(out / "data"), "--log-root", str(out / "log_files"), "--no-progress",
                 "--pretrain-epochs", str(args.pretrain_epochs)], defaults)
    print(f"pipeline exit code {rc} in {time.perf_counter() - t0:.0f}s")
    return rc


if __name__ == "__main__":
    sys.exit(main())
