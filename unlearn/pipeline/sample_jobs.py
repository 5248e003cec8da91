"""The job graph of ``run.py --scenario sample``: the paper's 2025 sample-wise scenario.

pretrain (each replicate; the class-wise pretrained models, shared) -> ``forget_sample_main.py`` for
every method of the list defined without a forget class (each replicate and seed) and for the R
retrained references (seeds ``config.REFERENCE_SEED_BASE + r``, shared by every replicate) -> the LiRA
shadows once (a helper job) -> ``mia_on_mu_main_sample.py`` on every one of those models, the
references included, so the null is scored exactly as the methods are.

Built from :mod:`unlearn.pipeline.runner`'s pieces (the same jobs, folders and freshness rules);
the summary is :mod:`unlearn.pipeline.sample_summary`.
"""
from __future__ import annotations

import sys
from dataclasses import replace

import config
from ..methods import get_method
from ..store.setting import Setting
from .runner import Job, attack_flags, common_flags, forget_job, pretrain_jobs, reference_jobs, script


def split_methods(methods) -> tuple[list, list]:
    """(the entries the sample-wise scenario runs, the names it leaves out: methods only defined for a class)."""
    keep, dropped = [], []
    for m in methods:
        (dropped if get_method(m[0])[0].class_only else keep).append(m)
    return keep, [m[0] for m in dropped]


def shadows_job(s: Setting, attack: dict, *, deps=()) -> Job:
    """The LiRA shadows of the setting (cached; :mod:`unlearn.evaluation.shadows`): a helper job that runs
    only when an attack needing them runs, so attacks run in parallel never train them twice."""
    cmd = [sys.executable, script("attack_sample", s.dataset), *common_flags(s), "--shadows-only",
           *attack_flags(attack)]
    return Job("lira-shadows", cmd, s.stage_root("lira_shadows"), [], list(deps), if_needed=True, dataset=s.dataset)


def sample_attack_job(s: Setting, entry, forget_flags: list[str], extras: dict, *, attack: dict, weight_path=None,
                      deps=()) -> Job:
    """The attack on one forget run: that run's flags, then the attack's overrides."""
    method, p1, p2, _ = entry
    adir = s.stage_dir("mia_sample_attack", method, p1, p2, extras)
    cmd = [sys.executable, script("attack_sample", s.dataset), *forget_flags,
           *(["-weight_path", str(weight_path)] if weight_path else []), *attack_flags(attack)]
    return Job(f"attack:{adir.name}", cmd, adir, [adir / "results.json"], list(deps),
               group=f"attack:seed{s.seed}{s.replicate_tag}", dataset=s.dataset)


def build_sample_jobs(base: Setting, *, methods, seeds, stages, attack: dict, extra_pretrain=(), method_l1=None,
                      weight_path=None, retrain_refs: int = 0, replicates=(0,)) -> list[Job]:
    """The sample-wise graph (module docstring); ``base`` is sample-wise, ``methods`` the list's entries
    (normalised) that :func:`split_methods` keeps."""
    if not base.sample_wise:
        raise ValueError("build_sample_jobs needs a sample-wise setting (forget_percent)")
    reps = {p: replace(base, pretrain_seed=p) for p in replicates}
    pre = {p: pretrain_jobs(replace(s, forget_percent=None), methods, stages=stages, extra_pretrain=extra_pretrain,
                            method_l1=method_l1, weight_path=weight_path) for p, s in reps.items()}
    jobs = [j for js in pre.values() for j in js]
    attacking = "attack" in stages
    shadows = shadows_job(base, attack) if attacking else None
    retrain = next((m for m in methods if m[0] == "retrain"), None)
    if retrain is not None and retrain_refs > 0:
        first = next(iter(reps))
        refs = reference_jobs(replace(base, pretrain_seed=0), retrain, retrain_refs, weight_path=weight_path,
                              deps=[j.name for j in pre[first]])
        jobs += refs if "forget" in stages else []
        if attacking:
            jobs.append(shadows)
            for r, job in enumerate(refs):  # reference_jobs' order: seeds REFERENCE_SEED_BASE + r
                s = replace(base, pretrain_seed=0, seed=config.REFERENCE_SEED_BASE + r)
                _, flags, extras = forget_job(s, retrain, weight_path=weight_path)
                a = sample_attack_job(s, retrain, flags, extras, attack=attack, weight_path=weight_path,
                                      deps=[job.name, shadows.name])
                a.group = "attack:references"
                jobs.append(a)
    elif attacking:
        jobs.append(shadows)
    for p, s in reps.items():
        for seed in seeds:
            sd = replace(s, seed=seed)
            for entry in methods:
                job, flags, extras = forget_job(sd, entry, weight_path=weight_path, deps=[j.name for j in pre[p]])
                jobs += [job] if "forget" in stages else []
                if attacking:
                    jobs.append(sample_attack_job(sd, entry, flags, extras, attack=attack, weight_path=weight_path,
                                                  deps=[job.name, shadows.name]))
    names = {j.name for j in jobs}
    for j in jobs:  # a dependency outside the requested stages is assumed to exist already
        j.deps = [d for d in j.deps if d in names]
    return jobs
