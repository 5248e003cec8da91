"""Plain per-dataset configuration (nanoGPT style): edit the numbers here.

For each dataset: the classes held out as out-of-distribution (OOD; never trained
on, used as the Reminiscence Attack's non-members), the default forget class, the
default network and the pretraining hyperparameters. Class ids are the dataset's
own labels; the in-distribution classes are re-indexed 0..K-1 in increasing order.

CIFAR-20 OOD choice: the paper's 2024 appendix holds out superclasses
[12, 16, 17, 18, 19] ("Cifar20 (-5)", 15 classes trained) and forgets superclass 4
(fruit and vegetables). Later code held out [4, 12, 16, 17, 18, 19], which makes
its own forget class 4 OOD. We follow the 2024 setting, whose published numbers
(../shared/reference) we compare against, so that class 4 can be forgotten.
"""
import os

DATA_ROOT = os.environ.get("UNLEARN_DATA_ROOT", "./data")
LOG_ROOT = os.environ.get("UNLEARN_LOG_ROOT", "./log_files")

# Shared pretraining recipe (the paper's): SGD, momentum 0.9, weight decay 5e-4,
# MultiStepLR gamma 0.2 after one linear warm-up epoch. Per dataset, `augment` (random crop +
# flip) is off everywhere, as the paper's 2024 code: its models memorise (~100% retain-train,
# ~65% test accuracy), which is what membership attacks feed on. `retrain` uses the same recipe.
# Pretraining keeps the epoch with the most correct test samples, among the epochs after the
# `best_from_milestone`-th milestone (0: all); a tie goes to the later epoch (the longest-trained,
# memorised model), so the choice does not depend on a CPU's rounding where the counts agree.
PRETRAIN_DEFAULTS = dict(lr=0.1, momentum=0.9, weight_decay=5e-4, gamma=0.2, warmup_epochs=1, batch_size=64)

DATASETS = {
    "Cifar20": dict(
        classes=20, ood_classes=[12, 16, 17, 18, 19], forget_class=4, net="ResNet18", image_shape=(3, 32),
        epochs=40, milestones=[15, 30, 35], augment=False,
    ),
    "Cifar100": dict(
        classes=100, ood_classes=[95, 96, 97, 98, 99], forget_class=4, net="ResNet18", image_shape=(3, 32),
        epochs=200, milestones=[60, 120, 160], augment=False,
    ),
    "Imagenet64": dict(  # the first 100 classes, resized to 32x32 as the paper
        classes=100, ood_classes=[95, 96, 97, 98, 99], forget_class=4, net="ResNet18", image_shape=(3, 32),
        epochs=200, milestones=[60, 120, 160], augment=False,
    ),
    # CPU-scale: 10 classes, two held out as OOD.
    "Digits": dict(
        classes=10, ood_classes=[8, 9], forget_class=4, net="SmallCNN", image_shape=(1, 8),
        epochs=30, milestones=[15, 25], lr=0.05, batch_size=32, augment=False,
    ),
    "FashionMNIST": dict(
        classes=10, ood_classes=[8, 9], forget_class=4, net="SmallCNN", image_shape=(1, 28),
        epochs=30, milestones=[15, 25], lr=0.05, batch_size=128, augment=False, best_from_milestone=2,
    ),
}


# Sample-wise scenario (forget_sample_main.py): the percent of the in-distribution training samples forgotten,
# the paper's 2025 forget_sample_main.py -forget_perc 0.1 (10%).
FORGET_PERCENT = {"Cifar20": 10.0, "Cifar100": 10.0, "Imagenet64": 10.0, "Digits": 10.0, "FashionMNIST": 10.0}

# Sample-wise attack (mia_on_mu_main_sample.py, unlearn/evaluation/sample_attack.py): LiRA's shadows (each
# sample in shadow_in of them), targets (members: forget samples, non-members: test samples), queries, and the
# sample-wise Reminiscence Attack's retain fine-tuning. GPU datasets: the paper's 2025 code (8 shadows, 6 of 8,
# 500 vs 500, ResNet18 lrs 0.01 then 0.005 for 3 epochs each). Digits and FashionMNIST: the paper's shadows, design
# and fine-tuning, one query (their models train without augmentation). Digits' 100 forget samples at 10% against
# 434 test samples: the 8 shadows took 25 s, the default run 247 s (README, sample-wise section).
SAMPLE_ATTACK = {
    **{d: dict(shadows=8, shadow_in=6, members=500, non_members=500, queries=10, rea_lrs=[0.01, 0.005],
               rea_epochs=[3, 3]) for d in ("Cifar20", "Cifar100", "Imagenet64")},
    "Digits": dict(shadows=8, shadow_in=6, members=500, non_members=500, queries=1, rea_lrs=[0.01, 0.005],
                   rea_epochs=[3, 3]),
    "FashionMNIST": dict(shadows=8, shadow_in=6, members=500, non_members=500, queries=1, rea_lrs=[0.01, 0.005],
                         rea_epochs=[3, 3]),
}

# Sample-wise null (run.py --scenario sample): retrained models without the forget samples (seeds
# REFERENCE_SEED_BASE + r, shared by every replicate), each attacked exactly as the methods are. Not in the
# paper's code, which scores no retrained model. Digits 20 and FashionMNIST 18, as the class-wise references:
# the fewest with which K = 3 replicates can be decided under Holm over the table's 26 rows (2 / C(3 + R, 3)
# x 26 < 0.05 needs R >= 17; tests/test_decide.py checks it); GPU datasets: 5 (K = 1, the prediction test).
SAMPLE_RETRAIN_REFS = {"Cifar20": 5, "Cifar100": 5, "Imagenet64": 5, "Digits": 20, "FashionMNIST": 18}

# Replicates: independently pretrained models (pretraining seeds 0..K-1), each with its own runs of every
# method. The unit of an experiment is a pretrained model (a method's verdict is a test over its K models
# against the R retrained references, unlearn/evaluation/rea/decide.py); run.py --replicates overrides.
REPLICATES = {"Cifar20": 1, "Cifar100": 1, "Imagenet64": 1, "Digits": 3, "FashionMNIST": 3}

# Equivalence margin of the replicated verdict, in reference sd (the sd of the R references' model
# statistics): "equivalent" = TOST shows |method - references| < REA_MARGIN_SD sd. 1.5: by simulation
# (unlearn/evaluation/rea/calibration.py) at K = 3, R = 20 a method like retraining is called equivalent
# about half the time and one 1 sd away 17% of the time; at 1 sd, equivalence is out of reach with 3 models.
# Checked on 30 real retrained Digits models in docs/calibration.md (studies/calibration.py).
REA_MARGIN_SD = 1.5
REA_ALPHA = 0.05

# Reference population of the Reminiscence Attack: retrain runs with seeds REFERENCE_SEED_BASE + 0..R-1
# (R = ATTACK[dataset]["retrain_refs"]), far from the experiment seeds so they never coincide.
REFERENCE_SEED_BASE = 1000

# Reminiscence Attack defaults: candidate set = unlearn_data_percent of the forget
# class's training data; non-members from num_ood_dataset OOD classes; each step
# = 1 candidate + retain_per_step retain samples; curves capped at steps; each candidate is
# used at most once per curve when there are at least `steps` of them (the paper's code);
# retrain_refs retrained reference models calibrate every verdict.
ATTACK = {
    "Cifar20": dict(unlearn_data_percent=3.0, num_ood_dataset=5, retain_per_step=14, relearning_lr=[0.004, 0.008],
                    trials=20, steps=75, retrain_refs=5),
    "Cifar100": dict(unlearn_data_percent=20.0, num_ood_dataset=5, retain_per_step=4, relearning_lr=[0.004, 0.008],
                     trials=20, steps=75, retrain_refs=5),
    "Imagenet64": dict(unlearn_data_percent=20.0, num_ood_dataset=5, retain_per_step=4, relearning_lr=[0.004, 0.008],
                       trials=20, steps=75, retrain_refs=5),
    # Digits has 127 training images of the forget class: 16% gives 20 candidates, each used once in
    # 20 steps; at lr 0.05 retrained models relearn about 30% of them on average over the steps, which leaves
    # room on both sides. 20 references: with K = 3 replicates the permutation test flags a method 2 reference
    # sd from retraining 85% of the time (5 references: 50%; simulated, 4000 normal experiments,
    # unlearn/evaluation/rea/calibration.py).
    # cpu_curve_batch: the 20 curves of a model and level relearned as one batched call on a CPU: 40 Digits
    # curves take 2.8-3.2 s so against 3.8-4.3 s one at a time on one thread (nothing else running); on
    # FashionMNIST's 28x28 inputs batching is 2.3x slower (17-19 s against 8 s for 12 curves), so it stays 1.
    # Not bit-identical to one at a time: 27 of 20,800 cached curve points differed, by up to 0.2 (README).
    "Digits": dict(unlearn_data_percent=16.0, num_ood_dataset=2, retain_per_step=14, relearning_lr=[0.05],
                   trials=10, steps=20, retrain_refs=20, cpu_curve_batch=20),
    # 1.25% of 6000 coats = 75 candidates, each used once in 75 steps (the paper's protocol). 18 references:
    # the fewest with which 3 replicates can be decided at all under Holm over the table's 30 rows (the
    # permutation test's smallest p is 2 / C(R + 3, 3): 0.0015 x 30 < 0.05; at the earlier R = 8 it was
    # 2/165 x 26 = 0.32 and every verdict was undetermined by construction; tests/test_decide.py checks it).
    "FashionMNIST": dict(unlearn_data_percent=1.25, num_ood_dataset=2, retain_per_step=14, relearning_lr=[0.01],
                         trials=12, steps=75, retrain_refs=18),
}




# Recommended (method, para1, para2) per dataset, as the paper's run.py. para1/para2
# mean what each method documents (`python forget_full_class_main_cifar20.py --help`,
# unlearn/methods/*.py); None takes the method's default (for _our: its over-unlearning default;
# for retrain: the dataset's pretraining recipe). OUR is the paper's 2025 defence (one method).
_PAPER_LIST = [
    ("retrain", None, None), ("finetune", 0.025, 10), ("negative_grad", 0.01, 2), ("amnesiac", 1e-4, 3),
    ("badteacher", 1e-4, 3), ("ssd_tuning", 1, 1), ("Wfisher", 50, None), ("FisherForgetting", None, None),
    ("UNSIR", None, None), ("FT_prune", 0.01, 10), ("SalUn", None, None), ("SCRUB", None, None),
    ("boundary_shrink", None, None),
    # the 2025 code's ResNet18 / CIFAR-100 settings (run_class_wise.py; its ViT / CIFAR-20 ones: 1e-5, 6 and
    # 2e-4, 3e-4)
    ("SFRon", 0.001, 8), ("RUM", 0.01, 3e-4),
]
_OUR = ["finetune", "negative_grad", "amnesiac", "badteacher", "ssd_tuning", "Wfisher", "FisherForgetting",
        "UNSIR", "FT_prune", "SalUn", "SCRUB", "boundary_shrink", "SFRon", "RUM"]
MU_METHOD_LIST = {
    "Cifar20": [("baseline", 0, 0), *_PAPER_LIST, ("OUR", None, None), *[(m + "_our", None, None) for m in _OUR]],
    "Cifar100": [("baseline", 0, 0), *_PAPER_LIST, ("OUR", None, None), *[(m + "_our", None, None) for m in _OUR]],
    "Imagenet64": [("baseline", 0, 0), *_PAPER_LIST, ("OUR", None, None),
                   *[(m + "_our", None, None) for m in _OUR]],
    # CPU-scale settings under which every method but those of OFF_TARGET forgets (d_f <= 10%) and keeps
    # d_t within 10 points of its model's baseline on every one of six pretrained models: pretraining seeds
    # 0, 1, 2, the floating-point perturbations UNLEARN_FP_PERTURB=1 and 2 (another CPU's rounding) and the
    # 2-thread model run.py pretrains (benchmarks/check_defaults.py; unlearning seed 0). Comments: worst
    # d_t drop below the model's baseline / worst d_f over the six.
    "Digits": [
        ("baseline", 0, 0), ("retrain", None, None),                                 # 0.5 / 0.0
        ("finetune", 0.1, 20, {"weight_decay": 0.02}),                               # 0.0 / 0.0
        ("negative_grad", 0.03, 5),                                                  # 7.4 / 1.6
        ("amnesiac", 0.01, 3),                                                       # 2.6 / 0.0
        ("badteacher", 1e-3, 3),                                                     # 0.5 / 0.0
        ("ssd_tuning", 7, 1),                                                        # OFF_TARGET
        ("Wfisher", 100, 1000),                                                      # OFF_TARGET
        ("FisherForgetting", None, None),                                            # 3.9 / 0.0
        ("UNSIR", 0.01, 2),                                                          # 1.3 / 0.0
        ("FT_prune", 0.01, 10, {"l1": 0.01}),                                        # 1.8 / 0.0
        ("SalUn", None, None),                                                       # 0.3 / 0.0
        ("SCRUB", 0.01, 5),                                                          # 0.5 / 0.0
        ("boundary_shrink", 5e-5, 15),                                               # 1.3 / 0.0
        ("SFRon", 0.015, 5),                                                         # 2.9 / 0.0 (s0-s2, p1)
        ("RUM", 0.01, 0.02),                                                         # 1.6 / 5.5 (s0-s2, p1)
        ("OUR", 0.01, 5),                                                            # 0.8 / 0.0
        ("finetune_our", 0.1, 20, {"weight_decay": 0.005}),                          # 0.5 / 0.0
        ("negative_grad_our", 0.02, 5),                                              # 1.8 / 0.0
        ("amnesiac_our", 0.01, 5),                                                   # 5.5 / 0.0
        ("badteacher_our", 1e-2, 3),                                                 # 0.8 / 0.0
        ("ssd_tuning_our", None, None),                                              # 0.5 / 0.0
        ("Wfisher_our", None, None),                                                 # 1.6 / 0.0
        ("FisherForgetting_our", None, None),                                        # 2.1 / 0.0
        ("UNSIR_our", 0.01, 0),                                                      # 7.9 / 0.0
        ("FT_prune_our", 0.05, 5, {"over_l1": 0.05}),                                # 0.8 / 0.0
        ("SalUn_our", None, None),                                                   # 0.5 / 3.9
        ("SCRUB_our", 0.01, 5),                                                      # 2.4 / 0.0
        ("boundary_shrink_our", 5e-3, 10),                                           # 0.8 / 0.0
        ("SFRon_our", 0.05, 3),                                                      # 0.5 / 0.0 (s0-s2, p1)
        ("RUM_our", 0.01, 0.01),                                                     # 1.1 / 0.0 (s0-s2, p1)
    ],
    # FashionMNIST (no augmentation: retain-train 99.65%, retain-test 90.9%; the best-test epoch after the
    # second milestone), checked like Digits on three pretrained models: pretraining seeds 0 and 1 and
    # UNLEARN_FP_PERTURB=1 (benchmarks/check_defaults.py, docs/defaults/). Comments: worst d_t drop below the
    # model's baseline / worst d_f over the three.
    "FashionMNIST": [
        ("baseline", 0, 0), ("retrain", None, None),                                 # 0.0 / 0.0
        ("finetune", 0.025, 3),                                                      # 0.0 / 1.8
        ("negative_grad", 2e-3, 1),                                                  # 0.3 / 0.6
        ("amnesiac", 1e-4, 2),                                                       # 0.0 / 0.1
        ("badteacher", 1e-4, 4, {"T": 0.05}),                                        # OFF_TARGET
        ("ssd_tuning", 6.3, 1),                                                      # OFF_TARGET
        ("Wfisher", 1.5, 1000),                                                      # OFF_TARGET
        ("FisherForgetting", 1e-6, 1000, {"fisher": "mc", "fisher_samples": 2000}),  # 3.7 / 0.7
        ("UNSIR", 0.02, 1),                                                          # 3.7 / 0.0
        ("FT_prune", 0.01, 3),                                                       # 0.7 / 6.4
        ("SalUn", 0.013, 3),                                                         # 0.2 / 0.0
        ("SCRUB", 5e-3, 1),                                                          # 1.2 / 0.0
        ("boundary_shrink", 1e-4, 3),                                                # 0.0 / 0.0
        ("SFRon", 1e-3, 1),                                                          # 0.7 / 0.0 (s0, s1)
        ("RUM", 0.01, 1e-3),                                                         # 0.0 / 0.0 (s0, s1)
        ("OUR", None, None),                                                         # 0.0 / 0.2
        ("finetune_our", 0.1, 2),                                                    # 2.1 / 0.0
        ("negative_grad_our", 3e-4, 1),                                              # 0.1 / 6.3
        ("amnesiac_our", 0.0025, 1),                                                 # 0.0 / 0.0
        ("badteacher_our", 1e-3, 3),                                                 # 0.0 / 0.0
        ("ssd_tuning_our", 0.005, 0.4),                                              # 1.1 / 0.0
        ("Wfisher_our", 120, 1000),                                                  # 6.1 / 0.0
        ("FisherForgetting_our", 1e-5, 1000, {"fisher": "mc", "fisher_samples": 2000}),  # 0.0 / 0.0
        ("UNSIR_our", 0.02, 0),                                                      # 0.0 / 0.0
        ("FT_prune_our", 0.05, 2),                                                   # 1.7 / 0.0
        ("SalUn_our", 0.02, 3),                                                      # 0.6 / 0.0
        ("SCRUB_our", 1e-3, 2),                                                      # 0.0 / 0.0
        ("boundary_shrink_our", 1e-3, 3),                                            # 0.0 / 2.3
        ("SFRon_our", 0.01, 1),                                                      # 0.7 / 0.0 (s0, s1)
        ("RUM_our", 0.01, 3e-3),                                                     # 0.0 / 0.0 (s0, s1)
    ],
}

# L1 weight of the sparse pretrained model an `_our` method starts from, where a dataset needs
# another than the method's own (unlearn.methods.pretrain_l1); pretrained by run.py when missing.
OUR_PRETRAIN_L1 = {"Digits": {"Wfisher": 5e-4}}  # 5e-5 leaves the 110k-weight SmallCNN dense (d_f 100)

# Points per t-SNE in run.py's distribution stage (stratified subsample; the script's default is 5000).
DISTRIBUTION_MAX_POINTS = {"FashionMNIST": 2000}

# Methods that do not reliably meet "d_f <= 10% with d_t within 10 points of baseline" on every pretrained
# model checked (benchmarks/check_defaults.py; models as in the comment of MU_METHOD_LIST["Digits"]): a
# reason starting "depends on the pretrained model" means some models meet it and others not, whatever the
# setting tried; any other reason, that no model does. The tests check that every method that misses on
# their pretrained model is listed here, and that a method listed as never meeting it still misses.
# d_f / d_t drop per model below: s0, s1, s2 (pretraining seeds), p1, p2 (UNLEARN_FP_PERTURB), t2 (2 threads).
OFF_TARGET = {
    "Digits": {
        "Wfisher": "depends on the pretrained model: at alpha 100 (exact solve, 1000 retain samples) d_f / d_t "
                   "drop is 100 / 0, 4.7 / 0.8, 100 / 0, 0 / 53.7, 96.9 / 0, 99.2 / 0 on s0, s1, s2, p1, p2, t2; "
                   "the forgetting step size lies between 'nothing' and 'collapse' at a point that moves with the "
                   "model (on the first-of-tied-epochs model: 95.5 / 96.9 at alpha 50, 73.2 / 17.3 at 90, "
                   "68.9 / 4.7 at 100; the paper's estimator --opt estimator=paper alike)",
        "ssd_tuning": "depends on the pretrained model: the ratio of forget to full importance is bimodal, and "
                      "the alpha that separates the forget weights moves with the model. With the authors' "
                      "class-ordered retain batches, at (7, 1) d_f / d_t drop is 12.6 / 0, 0 / 0, 100 / 0, "
                      "25.2 / 0.3 on s0, s1, s2, p1; (3, 1) 0 / 0.5, 0 / 17.9, 77.2 / 0, 0 / 13.7; (1, 1) 0 / 21.1, "
                      "0 / 58.7, 0 / 0, 0 / 14.0 (these four models pretrained on one thread). In dataset order "
                      "(--opt retain_order=dataset) (7, 1) gave 0 / 0, 0 / 0, 19 / 2, 0 / 26, 0 / 0, 100 / 0 on "
                      "s0, s1, s2, p1, p2, t2 (other pretrained models of an earlier version); alpha 5, 6 and "
                      "lambda 0.3-4 tried there, none on all six",
    },
    "FashionMNIST": {
        "ssd_tuning": "depends on the pretrained model (models s0, s1, p1): at (6.3, 1) d_f / d_t drop is 0 / 0, "
                      "0 / 1.4, 64.3 / 0; alpha 5 forgets on all three but drops d_t by 46, 24, 41; alpha 4 by "
                      "72, 40, 45. In run.py's replicates (pretraining seeds 0, 1, 2; the class-ordered retain "
                      "batches) d_f is 49.3, 71.2, 99.8 at (6.3, 1)",
        "badteacher": "depends on the pretrained model: at (1e-4, 4, T 0.05) d_f / d_t drop is 5.7 / 3.3, 1.6 / "
                      "2.1, 46.8 / 2.4 on run.py's replicates 0, 1, 2 (pretraining seeds; the third was not among "
                      "the three checked models); on replicate 2 (1e-4, 6) 48.2, (2e-4, 4) 44.1, (5e-4, 4) 79.6, "
                      "(1e-3, 4) 68.2, (5e-5, 4) 46.4 and T 1 (1e-4, 4) 21.2: none forgets there",
        "Wfisher": "depends on the pretrained model: at alpha 1.5 d_f is 1.0, 1.7, 37.1 on run.py's replicates "
                   "0, 1, 2 (pretraining seeds); on replicate 2 alpha 1.75 gives 26.6, 2 18.9, 3 1.4 (d_t drop "
                   "5.5), but alpha 3 drops d_t by 8.6 and 23.7 on replicates 0 and 1",
    },
}


def dataset_config(name: str) -> dict:
    """The pretraining defaults merged with the dataset's own entries."""
    return {**PRETRAIN_DEFAULTS, **DATASETS[name]}


# Resources of one SLURM job (= one run) for `run.py --executor slurm`; each flag overrides its entry
# (--slurm_partition, --gpus_per_job, --cpus_per_job, --mem_gb, --timeout_min). partition None: the
# cluster's default. The timeouts cover the longest run of a dataset, pretraining, with room; they
# were not measured on a cluster. A CPU-only job runs with cpus_per_job torch threads.
# Torch threads of every stage process run.py starts on a CPU, on this machine, another or SLURM alike (the
# attack: 1). The thread count changes a run's floating-point path (reduction order), hence its numbers
# (59 of 428 Digits table cells differed between 1 and 2 threads): it is fixed here rather than left to the
# scheduler, and a run's identity records it (--threads), so a result is reused only for the same count.
CPU_THREADS = {"Digits": 1, "FashionMNIST": 1}
CPU_THREADS_DEFAULT = 4

SLURM = {
    "Cifar20": dict(partition=None, gpus_per_job=1, cpus_per_job=8, mem_gb=32, timeout_min=240),
    "Cifar100": dict(partition=None, gpus_per_job=1, cpus_per_job=8, mem_gb=32, timeout_min=720),
    "Imagenet64": dict(partition=None, gpus_per_job=1, cpus_per_job=8, mem_gb=64, timeout_min=1440),
    "Digits": dict(partition=None, gpus_per_job=0, cpus_per_job=1, mem_gb=4, timeout_min=30),  # = CPU_THREADS
    "FashionMNIST": dict(partition=None, gpus_per_job=0, cpus_per_job=1, mem_gb=8, timeout_min=60),
}
