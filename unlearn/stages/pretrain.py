"""Pretraining on the in-distribution classes (the paper's recipe, :mod:`unlearn.core.recipe`).

SGD with momentum 0.9 and weight decay 5e-4, one linear warm-up epoch, then
MultiStepLR (gamma 0.2) at the dataset's milestones; random crop + flip on
tensors only where config.py's ``augment`` says so (off for every dataset, as
the paper's 2024 code: its models memorise); OOD classes never seen. ``--l1``
adds an L1 penalty for a sparse model (used by ``Wfisher_our``). Keeps the best
epoch by in-distribution test accuracy; ties go to the later epoch (:func:`better_epoch`).
"""
from __future__ import annotations

import json
import sys
import time
from dataclasses import replace

import config
from ..core.cli import base_parser, device_arg, nonneg_float, positive_float, positive_int
from ..core.engine import accuracy, resolve_device, seed_everything
from ..core.errors import Diverged, UsageError
from ..core.recipe import fit, pretrain_recipe, warmup_multistep  # noqa: F401  (warmup_multistep: moved there)
from ..core.runinfo import environment
from ..store.checkpoint import atomic_write_json, atomic_write_text, save_checkpoint
from ..store.identity import run_identity
from ..store.setting import Setting


def parser(dataset_default: str):
    p = base_parser("Pretrain a classifier on the in-distribution classes.", dataset_default)
    p.add_argument("-lr", "--lr", type=positive_float, default=None, help="initial learning rate (default from config.py)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default from config.py)")
    p.add_argument("--l1", type=nonneg_float, default=0.0, help="L1 penalty weight for a sparse pretrained model")
    return p


def better_epoch(correct: int, best_correct: int) -> bool:
    """Whether an epoch with ``correct`` test samples right replaces the best so far (``best_correct``).

    Counts, not accuracies: a difference below one test sample is no difference, and a tie goes to the
    later epoch, the model that has trained longest (after the last milestone: the memorised model the
    paper's protocol attacks). Deterministic wherever the counts agree, whatever the CPU's rounding.
    """
    return correct >= best_correct


def pretrain(setting: Setting, *, lr: float, epochs: int, batch_size: int, l1: float, device,
             progress: bool = True, identity: dict | None = None) -> dict:
    """Train with the dataset's recipe (:mod:`unlearn.core.recipe`; ``lr``, ``epochs``, ``batch_size`` override it),
    write best/last checkpoints and results.json; return the results.

    Milestones scale with ``epochs`` when it differs from the recipe's (:meth:`TrainRecipe.with_epochs`).
    The best epoch is chosen by test accuracy among the epochs after the dataset's
    ``best_from_milestone``-th milestone (config.py; 0: all epochs). The paper's code keeps the best of all
    epochs; the code it derives from (pytorch-cifar100) only those after the second milestone, a condition
    the paper's code comments out. Without augmentation, test accuracy can peak before the model has
    memorised its training set (FashionMNIST: 90.8% at epoch 16, retain-train 96.5%).

    Epochs are compared by their number of correctly classified test samples and a tie goes to the later
    epoch (:func:`better_epoch`): on Digits test accuracy ties at 99.77% over many epochs, and "the first
    of the tied epochs" picked a different model on every CPU, whose rounding differs.
    """
    recipe = replace(pretrain_recipe(setting.dataset).with_epochs(epochs), lr=float(lr), batch_size=int(batch_size))
    after = int(config.dataset_config(setting.dataset).get("best_from_milestone", 0))
    first_eligible = min(recipe.milestones[after - 1] + 1, recipe.epochs) if 0 < after <= len(recipe.milestones) else 1
    device = resolve_device(device)
    gen = seed_everything(setting.pretrain_seed)
    data = setting.load_data(device)
    model = setting.new_model(device)
    train, test = data.in_train, data.in_test
    out = setting.pretrain_dir(l1)
    (out / "results.json").unlink(missing_ok=True)  # a failed or killed rerun must not look complete
    resolved = {**setting.as_dict(), **recipe.as_dict(), "l1": l1, "device": str(device),
                "best_from_epoch": first_eligible}
    meta = dict(model_name=setting.net, num_classes=setting.num_outputs, dataset=setting.dataset,
                class_map=setting.split.class_map, config=resolved)
    state = {"best": -1.0, "best_correct": -1, "best_epoch": 0, "epochs": []}
    out.mkdir(parents=True, exist_ok=True)
    log_lines: list[str] = []

    def on_epoch_end(epoch, record):
        record.update(train_acc=accuracy(model, train), test_acc=accuracy(model, test),
                      retain_train_acc=accuracy(model, data.retain_train),
                      retain_test_acc=accuracy(model, data.retain_test), seconds=time.perf_counter() - t0)
        state["epochs"].append(record)
        log_lines.append(json.dumps(record))
        atomic_write_text(out / "log.jsonl", "\n".join(log_lines) + "\n")
        correct = round(record["test_acc"] * len(test))
        if epoch + 1 >= first_eligible and better_epoch(correct, state["best_correct"]):
            state.update(best=record["test_acc"], best_correct=correct, best_epoch=epoch + 1,
                         best_state={k: v.detach().clone() for k, v in model.state_dict().items()})
        if progress:
            print(f"epoch {epoch + 1}/{recipe.epochs} loss {record['loss']:.4f} train {record['train_acc']:.4f} "
                  f"test {record['test_acc']:.4f}", flush=True)

    t0 = time.perf_counter()
    status, diverged = "ok", None
    try:
        fit(model, train, recipe, raw=data.raw, generator=gen, l1=l1, desc="pretrain", progress=progress,
            on_epoch_end=on_epoch_end)
    except Diverged as d:
        status, diverged = "diverged", {"step": d.step, "loss": str(d.loss)}
    seconds = time.perf_counter() - t0
    # Checkpoints are written only now, so an interrupted run leaves nothing that looks finished.
    save_checkpoint(out / "last.pth", model, **meta, extra={"epoch": len(state["epochs"])})
    if "best_state" in state:
        model.load_state_dict(state["best_state"])
    save_checkpoint(out / "best.pth", model, **meta, extra={"epoch": state["best_epoch"]})
    best = state["epochs"][state["best_epoch"] - 1] if state["best_epoch"] else {}
    results = {"status": status, "diverged": diverged, "config": resolved, "best_test_acc": state["best"],
               "best_epoch": state["best_epoch"], "best_retain_train_acc": best.get("retain_train_acc"),
               "best_retain_test_acc": best.get("retain_test_acc"), "seconds": seconds, "epochs": state["epochs"],
               "environment": environment(), "identity": identity}
    atomic_write_json(out / "results.json", results)
    return results


def main(argv=None, dataset_default: str = "Cifar20"):
    args = parser(dataset_default).parse_args(argv)
    if args.seed and args.pretrain_seed and args.seed != args.pretrain_seed:
        raise UsageError(f"-seed {args.seed} and --pretrain_seed {args.pretrain_seed} both name the pretraining "
                         "seed here; give one of them")
    args.pretrain_seed, args.seed = args.pretrain_seed or args.seed, 0  # pretraining: -seed is the model's seed
    setting = Setting.from_args(args)
    cfg = config.dataset_config(setting.dataset)
    res = pretrain(setting, lr=args.lr or cfg["lr"], epochs=args.epochs or cfg["epochs"],
                   batch_size=args.batch_size or cfg["batch_size"], l1=args.l1, device=device_arg(args),
                   progress=args.progress,
                   identity=run_identity(sys.argv[1:] if argv is None else list(argv), dataset=setting.dataset))
    print(f"best test accuracy {res['best_test_acc']:.4f} (epoch {res['best_epoch']}), {res['seconds']:.1f}s -> "
          f"{setting.pretrain_dir(args.l1)}")
    return 0 if res["status"] == "ok" else 1
