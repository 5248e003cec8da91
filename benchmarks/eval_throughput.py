"""Evaluation throughput: tensor-resident splits vs a torchvision DataLoader + PIL-transform pipeline.

Same model, same FashionMNIST test images, same normalisation; reports images/s
of each and their ratio. Usage: python benchmarks/eval_throughput.py [--net SmallCNN]
"""
import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from datasets import get_dataset  # noqa: E402
from datasets.splits import ClassSplit, make_split_data  # noqa: E402
from models import get_model  # noqa: E402
from unlearn.core.engine import accuracy  # noqa: E402


class PILDataset(torch.utils.data.Dataset):
    """The conventional pipeline: one PIL image per item, ToTensor + Normalize per sample."""

    def __init__(self, x, y, mean, std):
        from torchvision import transforms

        self.x, self.y = x, y
        self.t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(mean, std)])

    def __len__(self):
        return len(self.y)

    def __getitem__(self, i):
        from PIL import Image

        return self.t(Image.fromarray(self.x[i, 0].numpy())), int(self.y[i])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--net", default="SmallCNN")
    p.add_argument("--batch", type=int, default=1024)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    raw = get_dataset("FashionMNIST", "./data")
    model = get_model(args.net, 10, in_channels=1, image_size=28).eval()
    data = make_split_data(raw, ClassSplit(10, (), 0))
    test = data.in_test
    t0 = time.perf_counter()
    acc_t = accuracy(model, test, batch_size=args.batch)
    tensor_s = time.perf_counter() - t0
    loader = torch.utils.data.DataLoader(PILDataset(raw.x_test, raw.y_test, raw.mean, raw.std),
                                         batch_size=args.batch, num_workers=args.workers)
    t0 = time.perf_counter()
    correct = 0
    with torch.no_grad():
        for x, y in loader:
            correct += (model(x).argmax(1) == y).sum().item()
    pil_s = time.perf_counter() - t0
    n = len(test)
    assert abs(correct / n - acc_t) < 1e-6, "both pipelines must compute the same accuracy"
    print(f"{args.net}: tensor-resident {n / tensor_s:.0f} img/s, DataLoader+PIL ({args.workers} workers) "
          f"{n / pil_s:.0f} img/s, ratio {pil_s / tensor_s:.2f}x")


if __name__ == "__main__":
    main()
