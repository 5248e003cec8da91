"""The experimental setting shared by every stage, and where its files live.

Layout (as the paper's code, under ``log_files/``)::

    model/pretrain/{net}-{dataset}-{classes}[-l1_{l1}][-seed{p}]/{best,last}.pth, results.json
    forget_full_class_main/{net}-{dataset}-{classes}/unlearning/{method}-{para1}-{para2}[-seed{s}][-pre{p}]/
    forget_full_class_main/{net}-{dataset}-{classes}/mia_mu_attack/{method}-{para1}-{para2}[-seed{s}]/
    forget_full_class_main/{net}-{dataset}-{classes}/visualization/{method}-{para1}-{para2}[-seed{s}]/
    forget_sample_main/{net}-{dataset}-{classes}-forget{percent}pct[-fs{forget_seed}]/{stage}/...  (sample-wise)
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import config
from datasets import canonical_dataset_name, get_dataset
from datasets.splits import ClassSplit, SplitData, check_forget_percent, make_split_data
from models import canonical_model_name, get_model
from ..core.engine import perturb_init
from ..core.errors import Stopped, UsageError
from .checkpoint import load_checkpoint, load_into
from .identity import settings_suffix


def fmt_para(v) -> str:
    """A parameter as it appears in a folder name (``0.01``, ``2``, ``none``)."""
    if v is None:
        return "none"
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


@dataclass
class Setting:
    """Dataset, model and class split of an experiment, plus where to read and write.

    ``seed``: the unlearning and attack seed of a run. ``pretrain_seed``: which pretrained model, the
    experiment's *replicate* (issue: the unit of an experiment is a pretrained model): replicate ``p``
    is pretrained with seed ``p``; its folders carry ``-seed{p}`` (pretraining) and ``-pre{p}`` (runs
    of the model) when ``p`` is not 0, so replicate 0 keeps the names of a single-model experiment.
    The attack's candidate sets depend on ``seed`` only: every replicate and every retrained reference
    relearns the same sets (common random numbers).
    """

    net: str
    dataset: str
    classes: int
    forget_class: int
    ood_classes: list[int] = field(default_factory=list)
    data_root: str = config.DATA_ROOT
    log_root: str = config.LOG_ROOT
    seed: int = 0
    pretrain_seed: int = 0
    forget_percent: float | None = None  # sample-wise: this % of the training samples is forgotten; None: a class
    forget_seed: int = 0  # sample-wise: the seed of that draw (one forget set for every method, replicate and seed)

    @property
    def sample_wise(self) -> bool:
        return self.forget_percent is not None

    @classmethod
    def from_args(cls, args) -> "Setting":
        """Resolve names (case-insensitive), fill defaults from config.py and validate."""
        dataset = canonical_dataset_name(args.dataset)
        cfg = config.dataset_config(dataset)
        net = canonical_model_name(args.net or cfg["net"])
        classes = args.classes if args.classes is not None else cfg["classes"]
        if classes != cfg["classes"]:
            raise UsageError(f"-classes {classes} does not match {dataset}, which has {cfg['classes']} classes; "
                             f"pass -classes {cfg['classes']}")
        forget = getattr(args, "forget_class", None)
        ood = getattr(args, "ood_classes", None)
        percent = None  # class-wise, unless the command line is the sample-wise one (it has --forget_percent)
        if hasattr(args, "forget_percent"):
            percent = args.forget_percent if args.forget_percent is not None else config.FORGET_PERCENT[dataset]
        s = cls(net=net, dataset=dataset, classes=classes,
                forget_class=cfg["forget_class"] if forget is None else forget,
                ood_classes=sorted(set(cfg["ood_classes"] if ood is None else ood)),
                data_root=args.data_root or config.DATA_ROOT,
                log_root=getattr(args, "log_root", None) or config.LOG_ROOT, seed=args.seed,
                pretrain_seed=getattr(args, "pretrain_seed", None) or 0,
                forget_percent=percent, forget_seed=getattr(args, "forget_seed", 0) or 0)
        if s.sample_wise:
            check_forget_percent(s.forget_percent)  # before anything is loaded or written
        s.split  # validates forget class / OOD now, before anything is loaded or written
        return s

    @property
    def split(self) -> ClassSplit:
        return ClassSplit(self.classes, tuple(self.ood_classes), self.forget_class)

    @property
    def num_outputs(self) -> int:
        return self.split.num_in

    @property
    def tag(self) -> str:
        return f"{self.net}-{self.dataset}-{self.classes}"

    def class_extras(self, *, with_forget: bool = True) -> dict:
        """The class split where it differs from config.py (part of every run's identity and folder name)."""
        cfg = config.DATASETS[self.dataset]
        out = {}
        if sorted(self.ood_classes) != sorted(cfg["ood_classes"]):
            out["ood_classes"] = sorted(self.ood_classes)
        if with_forget and not self.sample_wise and self.forget_class != cfg["forget_class"]:
            out["forget_class"] = self.forget_class
        return out

    def pretrain_dir(self, l1: float = 0.0) -> Path:
        suffix = f"-l1_{fmt_para(l1)}" if l1 else ""
        suffix += f"-seed{self.pretrain_seed}" if self.pretrain_seed else ""
        suffix += settings_suffix(self.class_extras(with_forget=False))
        return Path(self.log_root) / "model" / "pretrain" / f"{self.tag}{suffix}"

    def run_name(self, method: str, para1, para2, extras: dict | None = None) -> str:
        """``{method}-{para1}-{para2}[-seed{s}][-pre{p}][-{hash}]``: the hash only for non-default settings."""
        seed = f"-seed{self.seed}" if self.seed else ""
        seed += self.replicate_tag
        suffix = settings_suffix({**self.class_extras(), **(extras or {})})
        return f"{method}-{fmt_para(para1)}-{fmt_para(para2)}{seed}{suffix}"

    def stage_root(self, stage: str) -> Path:
        """``forget_full_class_main/{tag}/{stage}``: where a stage's run folders (and the setting's other
        per-stage folders: ``attack_reference``, ``salun_masks``) live; sample-wise under
        ``forget_sample_main/{tag}-forget{percent}pct[-fs{forget_seed}]`` (the paper's ``forget_random_main``)."""
        if self.sample_wise:
            fs = f"-fs{self.forget_seed}" if self.forget_seed else ""
            return Path(self.log_root) / "forget_sample_main" / f"{self.tag}-forget{fmt_para(self.forget_percent)}pct{fs}" / stage
        return Path(self.log_root) / "forget_full_class_main" / self.tag / stage

    def stage_dir(self, stage: str, method: str, para1, para2, extras: dict | None = None) -> Path:
        """One run's folder: :meth:`stage_root` / :meth:`run_name`."""
        return self.stage_root(stage) / self.run_name(method, para1, para2, extras)

    @property
    def replicate_tag(self) -> str:
        """``-pre{p}``: how a run of replicate ``p`` is told apart in names (none for replicate 0)."""
        return f"-pre{self.pretrain_seed}" if self.pretrain_seed else ""

    @property
    def train_seed(self) -> int:
        """The seed of a run's own randomness (unlearning, retraining): ``seed`` on replicate 0, and apart
        from it on another replicate, so ``retrain``, which does not start from the pretrained model,
        still gives K different models for K replicates."""
        return self.seed + 1_000_003 * self.pretrain_seed

    def load_data(self, device) -> SplitData:
        data = make_split_data(get_dataset(self.dataset, self.data_root), self.split, device)
        return data.with_forget_samples(self.forget_percent, self.forget_seed) if self.sample_wise else data

    def new_model(self, device=None):
        """A freshly initialised model (under ``UNLEARN_FP_PERTURB``, one ulp off: :func:`perturb_init`)."""
        channels, size = config.DATASETS[self.dataset]["image_shape"]
        model = perturb_init(get_model(self.net, self.num_outputs, in_channels=channels, image_size=size))
        return model.to(device) if device is not None else model

    def pretrain_command(self, l1: float = 0.0) -> str:
        extra = f" --l1 {l1}" if l1 else ""
        ood = self.class_extras(with_forget=False).get("ood_classes")
        extra += f" --ood_classes {' '.join(map(str, ood))}" if ood else ""
        extra += f" -seed {self.pretrain_seed}" if self.pretrain_seed else ""
        return (f"python pretrain_model_cifar20.py --dataset {self.dataset} -net {self.net} "
                f"-classes {self.classes}{extra}")

    def forget_command(self, what: str, *, seed=None) -> str:
        """The forget-stage command that makes a run: ``what`` names it (``-method M --para1 A --para2 B``);
        ``-seed`` follows for ``seed`` (default: this setting's), unless it is 0."""
        seed = self.seed if seed is None else seed
        return (f"python forget_full_class_main_cifar20.py --dataset {self.dataset} -net {self.net} {what}"
                + (f" -seed {seed}" if seed else "")
                + (f" --pretrain_seed {self.pretrain_seed}" if self.pretrain_seed else ""))

    def load_model(self, path, device, *, fix: str = ""):
        """A model of this setting with weights from a checkpoint, checked for a match."""
        obj = load_checkpoint(path, model_name=self.net, num_classes=self.num_outputs, dataset=self.dataset, fix=fix)
        return load_into(self.new_model(), obj, path, fix).to(device), obj

    def as_dict(self) -> dict:
        return asdict(self)


def run_cli(main):
    """Run a stage's ``main``; bad input becomes one line on stderr and exit code 2.

    Output piped into a command that stops reading (``run.py --dry-run | head``) ends quietly.
    """
    try:
        return main()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except Stopped as e:
        print(f"stopped: {e}", file=sys.stderr)
        sys.exit(e.code)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at interpreter exit
        return 0
