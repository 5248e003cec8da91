"""Training speed on this machine: seconds per SmallCNN FashionMNIST epoch and per ResNet18 64-image step.

Times forward + backward + SGD step on random tensors of the right shape after a
warm-up, and extrapolates the epoch from the measured steps. Usage:
python benchmarks/train_speed.py [--threads N]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import config  # noqa: E402
from models import get_model  # noqa: E402


def seconds_per_step(net, *, channels, size, batch, steps=10, classes=8):
    model = get_model(net, classes, in_channels=channels, image_size=size)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch, channels, size, size), torch.randint(0, classes, (batch,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = config.dataset_config("FashionMNIST")
    n_train = 48000  # FashionMNIST training images of the 8 in-distribution classes
    s = seconds_per_step("SmallCNN", channels=1, size=28, batch=cfg["batch_size"], steps=30)
    print(f"threads {torch.get_num_threads()}: SmallCNN FashionMNIST {s * 1000:.1f} ms/step at batch "
          f"{cfg['batch_size']} -> {s * n_train / cfg['batch_size']:.1f} s/epoch (training steps only)")
    r = seconds_per_step("ResNet18", channels=3, size=32, batch=64, steps=5)
    print(f"threads {torch.get_num_threads()}: ResNet18 32x32 {r:.3f} s per 64-image step")


if __name__ == "__main__":
    main()
