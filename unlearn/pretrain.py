"""Pretraining on the in-distribution classes (the paper's recipe).

SGD with momentum 0.9 and weight decay 5e-4, one linear warm-up epoch, then
MultiStepLR (gamma 0.2) at the dataset's milestones; random crop + flip done on
tensors; OOD classes never seen. ``--l1`` adds an L1 penalty for a sparse model
(used by ``Wfisher_our``). Keeps the best epoch by in-distribution test accuracy.
"""
from __future__ import annotations

import json
import time

import torch

import config
from .checkpoint import atomic_write_json, atomic_write_text, save_checkpoint
from .cli import base_parser, device_arg
from .engine import LoopConfig, accuracy, ce_step, resolve_device, seed_everything, sgd, train_epochs
from .errors import Diverged
from .runinfo import environment
from .setting import Setting


def parser(dataset_default: str):
    p = base_parser("Pretrain a classifier on the in-distribution classes.", dataset_default)
    p.add_argument("-lr", "--lr", type=float, default=None, help="initial learning rate (default from config.py)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default from config.py)")
    p.add_argument("--l1", type=float, default=0.0, help="L1 penalty weight for a sparse pretrained model")
    return p


def warmup_multistep(optimizer, *, steps_per_epoch: int, warmup_epochs: int, milestones, gamma: float):
    """Per-step LR factor: linear warm-up over ``warmup_epochs``, then MultiStep decay by epoch."""

    def factor(step: int) -> float:
        epoch = step // max(steps_per_epoch, 1)
        if epoch < warmup_epochs:
            return (step + 1) / (steps_per_epoch * warmup_epochs)
        return gamma ** sum(epoch >= m for m in milestones)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def pretrain(setting: Setting, *, lr: float, epochs: int, batch_size: int, l1: float, device,
             progress: bool = True) -> dict:
    """Train, write best/last checkpoints and results.json; return the results."""
    cfg = config.dataset_config(setting.dataset)
    device = resolve_device(device)
    gen = seed_everything(setting.seed)
    data = setting.load_data(device)
    model = setting.new_model(device)
    train, test = data.in_train, data.in_test
    out = setting.pretrain_dir(l1)
    resolved = {**setting.as_dict(), "lr": lr, "epochs": epochs, "batch_size": batch_size, "l1": l1,
                "milestones": cfg["milestones"], "gamma": cfg["gamma"], "momentum": cfg["momentum"],
                "weight_decay": cfg["weight_decay"], "warmup_epochs": cfg["warmup_epochs"], "device": str(device)}
    opt = sgd(model, lr, momentum=cfg["momentum"], weight_decay=cfg["weight_decay"])
    steps = (len(train) + batch_size - 1) // batch_size
    sched = warmup_multistep(opt, steps_per_epoch=steps, warmup_epochs=cfg["warmup_epochs"],
                             milestones=cfg["milestones"], gamma=cfg["gamma"])
    raw = data.raw
    meta = dict(model_name=setting.net, num_classes=setting.num_outputs, dataset=setting.dataset,
                class_map=setting.split.class_map, config=resolved)
    state = {"best": -1.0, "best_epoch": 0, "epochs": []}
    out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def on_epoch_end(epoch, record):
        record.update(train_acc=accuracy(model, train), test_acc=accuracy(model, test), lr=opt.param_groups[0]["lr"],
                      seconds=time.perf_counter() - t0)
        state["epochs"].append(record)
        log_lines.append(json.dumps(record))
        atomic_write_text(out / "log.jsonl", "\n".join(log_lines) + "\n")
        if record["test_acc"] > state["best"]:
            state.update(best=record["test_acc"], best_epoch=epoch + 1,
                         best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        if progress:
            print(f"epoch {epoch + 1}/{epochs} loss {record['loss']:.4f} train {record['train_acc']:.4f} "
                  f"test {record['test_acc']:.4f}", flush=True)

    t0 = time.perf_counter()
    status, diverged = "ok", None
    try:
        train_epochs(model, lambda e: train.batches(batch_size, shuffle=True, generator=gen), ce_step, opt,
                     loop=LoopConfig(epochs=epochs, batch_size=batch_size, l1=l1, desc="pretrain", progress=progress,
                                     augment=dict(padding=raw.crop_padding, hflip=raw.hflip)),
                     scheduler=sched, step_scheduler=True, on_epoch_end=on_epoch_end, generator=gen)
    except Diverged as d:
        status, diverged = "diverged", {"step": d.step, "loss": str(d.loss)}
    seconds = time.perf_counter() - t0
    # Checkpoints are written only now, so an interrupted run leaves nothing that looks finished.
    save_checkpoint(out / "last.pth", model, **meta, extra={"epoch": len(state["epochs"])})
    if "best_state" in state:
        model.load_state_dict(state["best_state"])
    save_checkpoint(out / "best.pth", model, **meta, extra={"epoch": state["best_epoch"]})
    results = {"status": status, "diverged": diverged, "config": resolved, "best_test_acc": state["best"],
               "best_epoch": state["best_epoch"], "seconds": seconds, "epochs": state["epochs"],
               "environment": environment()}
    atomic_write_json(out / "results.json", results)
    return results


def main(argv=None, dataset_default: str = "Cifar20"):
    args = parser(dataset_default).parse_args(argv)
    setting = Setting.from_args(args)
    cfg = config.dataset_config(setting.dataset)
    res = pretrain(setting, lr=args.lr or cfg["lr"], epochs=args.epochs or cfg["epochs"],
                   batch_size=args.batch_size or cfg["batch_size"], l1=args.l1, device=device_arg(args),
                   progress=args.progress)
    print(f"best test accuracy {res['best_test_acc']:.4f} (epoch {res['best_epoch']}), {res['seconds']:.1f}s -> "
          f"{setting.pretrain_dir(args.l1)}")
    return 0 if res["status"] == "ok" else 1
