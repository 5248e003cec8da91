"""``run.py``'s command line: resolve the parameters, build the job graph, run it, write the summary."""
from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

import config
from datasets.splits import check_forget_percent
from .core.cli import Parser, add_forget_class, finite_float, nonneg_int, positive_int
from .core.errors import UsageError
from .methods import pretrain_l1
from .methods.entries import normalise_entry
from .pipeline.runner import build_jobs, default_jobs, run_jobs, script
from .evaluation.sample_attack import SampleAttackConfig
from .pipeline.sample_jobs import build_sample_jobs, split_methods
from .pipeline.sample_summary import write_sample_summary
from .pipeline.slurm import add_slurm_args, cluster_options, run_jobs_slurm
from .pipeline.summary import write_summary
from .store.setting import Setting
from .tune.cli import add_tune_args
from .tune.grid import tuned_entries
from .tune.search import tune

STAGES = ["pretrain", "forget", "attack", "distribution"]
SCENARIOS = ("class", "sample")
SAMPLE_SCRIPTS = ("forget_sample_main", "mia_on_mu_main_sample")


def parser(defaults: dict):
    p = Parser(description="Run the whole pipeline and write log_files/summary.{md,csv}.",
               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("-dataset", "--dataset", default=defaults["dataset"])
    p.add_argument("-net", "--net", default=defaults["net"])
    p.add_argument("-classes", "--classes", type=int, default=defaults["classes"])
    add_forget_class(p, defaults["forget_class"])
    p.add_argument("--ood_classes", "--ood-classes", type=nonneg_int, nargs="+", default=defaults.get("ood_classes"),
                   help="classes held out as OOD (default from config.py)")
    p.add_argument("--seeds", type=nonneg_int, nargs="+", default=defaults["seeds"],
                   help="unlearning/attack seeds within each replicate")
    p.add_argument("--replicates", type=positive_int, default=defaults.get("replicates"),
                   help="independently pretrained models (pretraining seeds 0..K-1), each with its own runs of "
                        "every method: the unit the verdicts replicate over (default: config.REPLICATES)")
    p.add_argument("--replicate-seeds", "--replicate_seeds", dest="replicate_seeds", type=nonneg_int, nargs="+",
                   default=None, help="the pretraining seeds of the replicates (instead of 0..K-1)")
    p.add_argument("--methods", nargs="+", default=None,
                   help="method names to run (settings from the list in config.py); default: the whole list")
    p.add_argument("--stages", nargs="+", choices=STAGES, default=defaults["stages"])
    p.add_argument("--scenario", choices=SCENARIOS, default=defaults.get("scenario") or "class",
                   help="what is forgotten: one class (the paper's main scenario) or a random share of the training "
                        "samples (its 2025 sample-wise scenario: forget_sample_main.py, mia_on_mu_main_sample.py, "
                        "log_files/sample_summary.md)")
    p.add_argument("--forget_percent", "--forget-percent", dest="sample_percent", type=finite_float,
                   default=defaults.get("forget_percent"),
                   help="sample-wise: percent of the training samples forgotten (default config.FORGET_PERCENT)")
    p.add_argument("--forget_seed", "--forget-seed", dest="sample_seed", type=nonneg_int, default=0,
                   help="sample-wise: the seed of the forget set's draw")
    p.add_argument("--python_file", default=defaults["python_file"],
                   help="the paper's way: run only this stage script over the method list")
    p.add_argument("-weight_path", "--weight_path", default=defaults["weight_path"])
    p.add_argument("--jobs", type=positive_int, default=defaults["jobs"],
                   help="stage commands at once (default: the number of GPUs, each pinned to one; 1 on CPU)")
    p.add_argument("--isolate", action="store_true",
                   help="one process per run even with --jobs 1 (by default a stage's runs then share one)")
    p.add_argument("--trials", type=positive_int, default=None, help="override the attack's trials")
    p.add_argument("--retrain_refs", "--retrain-refs", type=nonneg_int, default=None,
                   help="retrained reference models of the attack (default: config.ATTACK)")
    p.add_argument("--pretrain-epochs", type=positive_int, default=None, help="override pretraining epochs")
    p.add_argument("--data-root", "--data_root", dest="data_root", default=None)
    p.add_argument("--log-root", "--log_root", dest="log_root", default=None)
    p.add_argument("--force", action="store_true",
                   help="rerun every run of the requested stages, even those whose results are fresh")
    p.add_argument("--dry-run", action="store_true", help="print the commands and stop")
    p.add_argument("--summary-only", action="store_true", help="only rebuild the summary from existing results")
    p.add_argument("--no-progress", dest="progress", action="store_false")
    p.add_argument("--tune", action="store_true",
                   help="tune each method of the list for this class split and seed instead of running the grid "
                        "(an Optuna study per method scored against retraining, under log_files/tune/; the grid "
                        "then runs the tuned settings); --jobs workers share each study")
    add_tune_args(p)
    add_slurm_args(p)
    return p


_PREFIXES = {"forget_full_class_main": "forget", "forget_sample_main": "forget", "mia_on_mu_main": "attack",
             "pretrain_model": "pretrain", "run-distribution-metric": "distribution"}


def stages_for(python_file: str | None, stages: list[str], dataset: str) -> list[str]:
    """The stage a paper-style ``python_file`` names; refused if it names another dataset.

    The CIFAR-20 scripts serve every dataset without a script of its own (Digits,
    FashionMNIST), so ``*_cifar20*.py`` goes with those too; a CIFAR-100 or ImageNet64
    script with another ``dataset`` is an error rather than a silent switch.
    """
    if not python_file:
        return stages

    name = Path(python_file).name
    stage = next((st for pre, st in _PREFIXES.items() if name.startswith(pre)), None)
    if name.startswith(SAMPLE_SCRIPTS):
        return [stage]
    if stage is None:
        raise UsageError(f"python_file {python_file!r} is not a stage script; use forget_full_class_main_<dataset>.py "
                         "or mia_on_mu_main_<dataset>_fullclass.py")
    if stage != "distribution":
        named = next((d for d in ("cifar100", "imagenet64", "cifar20") if f"_{d}" in name.lower()), None)
        expected = script(stage, dataset)
        if named is not None and Path(expected).name != name:
            raise UsageError(f"python_file {name} is a {named} script but the dataset is {dataset}, whose script is "
                             f"{expected}; set python_file = {expected!r} or change dataset")
    return [stage]


def use_tuned(base: Setting, methods: list, *, seed: int, weight_path=None, dry_run: bool = False) -> list:
    """The method list with each method's tuned setting for this class split and ``seed`` where one exists.

    The grid's first seed picks the setting and every seed runs it (one row, one setting; the other
    seeds show whether it transfers). Entries without a tuned setting stay exactly as they were, so
    their commands do not change. ``dry_run`` prints, per method, which setting it gets and why.
    """
    choices = tuned_entries(replace(base, seed=seed), methods, weight_path=weight_path)
    if dry_run:
        n = sum(note.startswith("tuned") for _, note in choices)
        print(f"# settings (seed {seed}): {n} tuned, {len(choices) - n} config.py default")
        for (entry, note) in choices:
            print(f"#   {entry[0]}: {note}")
    return [entry for entry, _ in choices]


def replicate_seeds(args, dataset: str) -> list[int]:
    """The replicates' pretraining seeds: ``--replicate-seeds``, else 0..K-1 for ``--replicates K``
    (default ``config.REPLICATES[dataset]``); one, 0, with a given pretrained checkpoint."""
    if args.replicate_seeds:
        seeds = list(dict.fromkeys(args.replicate_seeds))
    else:
        seeds = list(range(args.replicates or config.REPLICATES.get(dataset, 1)))
    if args.weight_path:
        if args.replicate_seeds or (args.replicates or 1) > 1:
            raise UsageError("a given pretrained checkpoint (-weight_path / pretrain_path) is one replicate; "
                             "drop it to pretrain the replicates, or drop --replicates")
        return [0]
    return seeds


def main(argv, defaults: dict) -> int:
    args = parser(defaults).parse_args(argv)
    args.seed = args.seeds[0]
    base = Setting.from_args(args)
    base.seed = 0
    methods = defaults["methods"] or config.MU_METHOD_LIST[base.dataset]
    methods = [normalise_entry(m) for m in methods]  # unknown names fail now, before anything runs
    if args.methods:
        known = {m[0]: m for m in methods}
        extra = [m for m in args.methods if m not in known]
        if extra:
            raise UsageError(f"--methods {extra} are not in the method list of {base.dataset}; "
                             f"choose from {', '.join(known)}")
        methods = [known[m] for m in args.methods]
    attack = dict(defaults["attack"] or {})
    if args.trials:
        attack["trials"] = args.trials
    if args.tune and args.scenario == "sample":
        raise UsageError("--tune tunes the class-wise scenario; drop --tune, or --scenario sample")
    if args.tune:
        cluster = cluster_options(args, base) if args.executor != "local" else None
        extra = ["--epochs", str(args.pretrain_epochs)] if args.pretrain_epochs else []
        return tune(base, methods, seeds=args.seeds, trials=args.tune_trials, sampler_seed=args.tune_seed,
                    dt_weight=args.tune_dt_weight, jobs=args.jobs or 1, threads=args.tune_threads,
                    weight_path=args.weight_path, extra_pretrain=extra, dry_run=args.dry_run, progress=args.progress,
                    cluster=cluster, replicates=replicate_seeds(args, base.dataset))
    stages = stages_for(args.python_file, args.stages, base.dataset)
    replicates = replicate_seeds(args, base.dataset)
    if args.scenario == "sample" or Path(args.python_file or "").name.startswith(SAMPLE_SCRIPTS):
        return sample_main(args, base, methods, stages=stages, replicates=replicates,
                           attack=dict(defaults.get("sample_attack") or {}))
    methods = use_tuned(base, methods, seed=args.seeds[0], weight_path=args.weight_path, dry_run=args.dry_run)
    refs = args.retrain_refs if args.retrain_refs is not None else attack.get(
        "retrain_refs", config.ATTACK.get(base.dataset, {}).get("retrain_refs", 0))
    if args.retrain_refs is not None:
        attack["retrain_refs"] = args.retrain_refs
    t0 = time.perf_counter()
    build = lambda extra: build_jobs(base, methods=methods, seeds=args.seeds, stages=stages, attack=attack,  # noqa: E731
                                     extra_pretrain=extra, weight_path=args.weight_path,
                                     method_l1=lambda m: pretrain_l1(m, base.dataset), retrain_refs=refs,
                                     force=args.force, replicates=replicates)
    failed = execute(args, base, build)
    if failed is None:
        return 0
    rows, md = write_summary(base, methods, args.seeds, weight_path=args.weight_path, attack=attack,
                             replicates=replicates)
    return report(md, f"{base.log_root}/summary.md, summary.csv", t0, failed)


def execute(args, base: Setting, build) -> dict | None:
    """Run the graph ``build(extra_pretrain)`` makes, locally or on SLURM: {failed run: last line}; None
    after a dry run; nothing to run with ``--summary-only``."""
    if args.summary_only:
        return {}
    jobs = build(["--epochs", str(args.pretrain_epochs)] if args.pretrain_epochs else [])
    n_jobs = args.jobs or default_jobs()
    status = (run_jobs_slurm(jobs, cluster_options(args, base), force=args.force, dry_run=args.dry_run,
                             progress=args.progress) if args.executor != "local" else
              run_jobs(jobs, n_jobs=n_jobs, force=args.force, dry_run=args.dry_run, progress=args.progress,
                       batch=n_jobs == 1 and not args.isolate))
    return None if args.dry_run else {k: v[1] for k, v in status.items() if v[0] != 0}


def report(md: str, where: str, t0: float, failed: dict) -> int:
    """Print the table, where it went and the failed runs; the exit code (1 when any failed)."""
    print(md)
    print(f"summary: {where} ({time.perf_counter() - t0:.0f}s)")
    if failed:
        print(f"{len(failed)} run(s) failed:")
        for k, v in failed.items():
            print(f"  {k}: {v}")
        return 1
    return 0


def sample_main(args, base: Setting, methods, *, stages, replicates, attack: dict) -> int:
    """``--scenario sample``: the sample-wise graph (:mod:`unlearn.pipeline.sample_jobs`) over the methods of
    the list defined without a forget class, then ``log_files/sample_summary.{md,csv}``."""
    percent = args.sample_percent if args.sample_percent is not None else config.FORGET_PERCENT[base.dataset]
    check_forget_percent(percent)
    base = replace(base, forget_percent=float(percent), forget_seed=args.sample_seed)
    SampleAttackConfig.checked({**config.SAMPLE_ATTACK.get(base.dataset, {}), **attack})  # one line now, nothing run
    methods, dropped = split_methods(methods)
    if dropped:
        print(f"# sample-wise: {', '.join(dropped)} left out (defined only for a forget class)")
    stages = [s for s in stages if s != "distribution"]  # the distribution metrics are of a forget class
    refs = args.retrain_refs if args.retrain_refs is not None else config.SAMPLE_RETRAIN_REFS.get(base.dataset, 0)
    t0 = time.perf_counter()
    build = lambda extra: build_sample_jobs(base, methods=methods, seeds=args.seeds, stages=stages,  # noqa: E731
                                            attack=attack, extra_pretrain=extra, weight_path=args.weight_path,
                                            method_l1=lambda m: pretrain_l1(m, base.dataset), retrain_refs=refs,
                                            replicates=replicates)
    failed = execute(args, base, build)
    if failed is None:
        return 0
    _, md = write_sample_summary(base, methods, args.seeds, weight_path=args.weight_path, replicates=replicates,
                                 retrain_refs=refs)
    return report(md, f"{base.log_root}/sample_summary.md, sample_summary.csv", t0, failed)
