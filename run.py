"""Run the whole experiment: pretrain -> unlearn every method -> Reminiscence Attack -> distribution
metrics -> the paper's table in log_files/summary.{md,csv}.

Edit the parameters below (or override them with flags, see --help) and run ``python run.py``.
With no changes it runs the embedded default: everything on Digits, on the CPU (about 13 minutes on 2 cores).
``scenario = "sample"`` (or ``--scenario sample``) runs the paper's sample-wise scenario instead:
log_files/sample_summary.{md,csv}.
"""
import sys

from unlearn.store.setting import run_cli

# ---------------------------------------------------------------- parameters users edit
net = None                 # None: the dataset's default in config.py (SmallCNN for Digits/FashionMNIST)
dataset = "Digits"         # Digits, FashionMNIST, Cifar20, Cifar100, Imagenet64 (case-insensitive)
n_classes = None           # classes of the dataset, OOD included (None: config.py)
forget_class = None        # a dataset label (None: config.py)
seeds = [0]                # unlearning/attack seeds within each replicate; several give mean ± std in the summary
replicates = None          # independently pretrained models, the unit the verdicts replicate over (None: config.py)
pretrain_path = None       # an existing pretrained checkpoint; None: pretrain when missing
mu_method_list = None      # [(method, para1, para2), ...]; None: config.MU_METHOD_LIST[dataset]
attack = None              # overrides of config.ATTACK[dataset], e.g. dict(trials=40, relearning_lr=[0.01])
stages = ["pretrain", "forget", "attack", "distribution"]
scenario = "class"         # "class": forget one class; "sample": forget a random share of the training samples
forget_percent = None      # sample-wise: percent of the training samples forgotten (None: config.FORGET_PERCENT)
sample_attack = None       # sample-wise: overrides of config.SAMPLE_ATTACK[dataset], e.g. dict(shadows=16)
# The paper's habit: set python_file to forget_full_class_main_{dataset}.py or
# mia_on_mu_main_{dataset}_fullclass.py to run only that stage over mu_method_list.
python_file = None
jobs = None                # parallel stage commands (None: number of GPUs, pinned one each; 1 on CPU)
# ----------------------------------------------------------------


if __name__ == "__main__":
    from unlearn.launcher import main

    sys.exit(run_cli(lambda: main(sys.argv[1:], defaults=dict(
        net=net, dataset=dataset, classes=n_classes, forget_class=forget_class, seeds=seeds, replicates=replicates,
        weight_path=pretrain_path, methods=mu_method_list, attack=attack, stages=stages, python_file=python_file,
        jobs=jobs, scenario=scenario, forget_percent=forget_percent, sample_attack=sample_attack))))
