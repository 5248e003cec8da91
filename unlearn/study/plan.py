"""The reproduction study (``studies/reproduction.py``): do the paper's three claims hold at CPU scale?

The paper ("Over-Unlearning and Replay Is All You Need" / "Reminiscence Attack on Residuals")
claims (1) approximate unlearning leaves residual knowledge the Reminiscence Attack exposes,
(2) Over-Unlearning & Replay removes it at 2-12% of retraining's cost and (3) retraining and
OUR spread the forget class out in the output space. This module plans the runs (the grid:
every method of ``config.MU_METHOD_LIST``, its ``_our`` variant and OUR, over *replicates*, i.e.
independently pretrained models, the unit the verdicts replicate over; and the trade-off sweep of
the defence's two knobs), runs them through run.py's job graph (the same stage scripts, resumable,
a finished run is reused) and reads every number back from the runs' ``results.json`` files: per
run (:func:`cells`) and as run.py's table rows with their replicated verdicts
(:func:`unlearn.pipeline.summary.summarise`). :mod:`unlearn.study.report` turns them into tables,
verdicts and figures.
"""
from __future__ import annotations

import math
import time
from dataclasses import astuple, dataclass, replace
from pathlib import Path

import numpy as np

import config
from ..evaluation.distribution import paper_kde_overlap
from ..methods import get_method, pretrain_l1
from ..methods.entries import entry_for, normalise_entry
from ..pipeline import summary as SM
from ..pipeline.runner import build_jobs, run_jobs
from ..store.checkpoint import read_ok_results
from ..store.setting import Setting

DATASETS = ("Digits", "FashionMNIST")
SEEDS = (0,)  # unlearning / attack seeds within a replicate
# The trade-off sweep: OUR and three _our variants (the paper's two, Bad Teacher and SSD, and the
# 2024 code's gradient ascent). Strength = a factor on the over-unlearning parameter named here;
# "1/para2": divides SSD's dampening constant lambda (a smaller lambda dampens the selected weights
# more). Its selection weight alpha is no knob at our settings: from 0.00125 to 0.02 it selects the
# same weights (Digits, seeds 0-2: identical d_t, d_f and index).
TRADEOFF_METHODS = {"OUR": "para1", "badteacher_our": "para1", "ssd_tuning_our": "1/para2",
                    "negative_grad_our": "para1"}
STRENGTHS = (0.25, 0.5, 1.0, 2.0, 4.0)
REPLAY_FACTORS = (1 / 3, 1.0, 2.0)  # times the method's configured replay epochs (at least 1 epoch)


@dataclass(frozen=True)
class Plan:
    """What the study runs for one dataset.

    ``replicates``: the pretraining seeds of the grid (None: ``config.REPLICATES[dataset]`` of them,
    as run.py); ``tradeoff_replicates`` those of the sweep (None: the grid's). ``tradeoff`` "full":
    every strength x replay length; "cross": the strengths at the default replay length and the
    replay lengths at the default strength (7 points instead of 15), for datasets where the full
    sweep costs too much on a CPU.
    """

    dataset: str
    seeds: tuple = SEEDS
    tradeoff: str = "full"
    tradeoff_seeds: tuple = SEEDS
    replicates: tuple | None = None
    tradeoff_replicates: tuple | None = None
    methods: tuple | None = None  # a subset of the method list (None: all of it)
    tradeoff_methods: tuple | None = None  # a subset of TRADEOFF_METHODS (None: all)
    attack: dict | None = None  # overrides of config.ATTACK[dataset], as run.py's `attack`


    @property
    def reps(self) -> tuple:
        return tuple(self.replicates if self.replicates is not None else range(config.REPLICATES[self.dataset]))

    @property
    def tradeoff_reps(self) -> tuple:
        return tuple(self.tradeoff_replicates) if self.tradeoff_replicates is not None else self.reps


PLANS = {"Digits": Plan("Digits"), "FashionMNIST": Plan("FashionMNIST", tradeoff="cross")}


@dataclass(frozen=True)
class SweepPoint:
    """One run of the trade-off sweep: a method-list entry at an over-unlearning strength and a replay length."""

    entry: tuple  # (method, para1, para2, options), as run.py runs it
    strength: float  # the factor on the swept parameter (TRADEOFF_METHODS)
    replay: int  # replay epochs

    @property
    def method(self) -> str:
        return self.entry[0]

    @property
    def value(self) -> float:
        """The swept parameter's value: para1, or para2 where the knob is 1/para2."""
        return self.entry[2] if TRADEOFF_METHODS[self.method] == "1/para2" else self.entry[1]


@dataclass(frozen=True)
class SweepRow:
    """A sweep point's numbers: one cell per replicate and seed (:func:`cells`) and its replicated
    verdicts (:func:`verdict_fields`). In numbers.json, the array ``[method, value, strength, replay,
    cells, verdicts]`` (:meth:`as_json`)."""

    method: str
    value: float  # the swept parameter's value
    strength: float
    replay: int
    cells: list
    verdicts: dict

    def as_json(self) -> list:
        return list(astuple(self))


def setting(dataset: str, log_root: str | Path) -> Setting:
    """The dataset's default setting (config.py) writing under ``log_root/<dataset>``."""
    cfg = config.DATASETS[dataset]
    return Setting(net=cfg["net"], dataset=dataset, classes=cfg["classes"], forget_class=cfg["forget_class"],
                   ood_classes=sorted(cfg["ood_classes"]), data_root=config.DATA_ROOT,
                   log_root=str(Path(log_root) / dataset), seed=0)


def grid_entries(dataset: str, methods=None) -> list[tuple]:
    """The method list as run.py runs it (``(method, para1, para2, options)``, defaults resolved);
    ``methods``: keep only these (baseline and retrain are always kept: every verdict needs them)."""
    keep = None if methods is None else {"baseline", "retrain", *methods}
    return [normalise_entry(e) for e in config.MU_METHOD_LIST[dataset] if keep is None or e[0] in keep]


def _clean(x: float) -> float:
    return float(f"{x:.6g}")


def tradeoff_entries(dataset: str, mode: str = "full", methods=None) -> list[SweepPoint]:
    """The sweep's runs: method-list entries, each with its strength and replay length.

    Strength 1 at the configured replay length is the grid's own run (same folder, reused).
    """
    grid = grid_entries(dataset)
    out = []
    for method, knob in TRADEOFF_METHODS.items():
        if methods is not None and method not in methods:
            continue
        m, p1, p2, opts = entry_for(method, grid)
        default_replay = int(opts.get("replay_epochs", get_method(method)[0].replay_epochs))
        replays = sorted({max(1, round(default_replay * f)) for f in REPLAY_FACTORS})
        for f in STRENGTHS:
            for r in replays:
                if mode == "cross" and f != 1.0 and r != default_replay:
                    continue
                q1 = _clean(p1 * f) if knob == "para1" else p1
                q2 = _clean(p2 / f) if knob == "1/para2" else p2
                o = {k: v for k, v in opts.items() if k != "replay_epochs"}
                if r != default_replay:
                    o["replay_epochs"] = r
                elif "replay_epochs" in opts:
                    o["replay_epochs"] = opts["replay_epochs"]
                out.append(SweepPoint((m, q1, q2, o), f, r))
    return out


def run_entries(base: Setting, entries, *, seeds, stages, replicates=(0,), jobs: int = 1, dry_run: bool = False,
                progress: bool = True, attack: dict | None = None) -> dict:
    """Run ``entries`` (plus the baseline and retrain runs the attack needs) as run.py would.

    The job graph is run.py's (:func:`unlearn.pipeline.runner.build_jobs`) with the same arguments, so
    a run finished by ``python run.py`` with the same settings is reused and vice versa.
    """
    entries = [tuple(e) for e in entries]
    have = {e[0] for e in entries}
    needed = [e for e in grid_entries(base.dataset) if e[0] in ("baseline", "retrain") and e[0] not in have]
    attack = dict(attack or {})
    refs = attack.get("retrain_refs", config.ATTACK[base.dataset]["retrain_refs"])
    jobs_ = build_jobs(base, methods=needed + entries, seeds=list(seeds), stages=list(stages), attack=attack,
                       method_l1=lambda m: pretrain_l1(m, base.dataset), retrain_refs=refs,
                       replicates=list(replicates))
    return run_jobs(jobs_, n_jobs=jobs, dry_run=dry_run, progress=progress, batch=jobs == 1)


# ---------------------------------------------------------------- reading the runs back

def _bands(s: Setting, entry, attack: dict | None) -> dict:
    """The index null bands (output and feature level) of one attack run, at the summary's lr."""
    ex = SM.run_extras(entry, attack=attack, dataset=s.dataset)
    res = read_ok_results(SM.run_dir(s, "mia_mu_attack", *entry[:3], ex) / "results.json")
    out = {}
    for short, level in SM.LEVEL_KEYS.items():
        _, v = SM.strongest((res or {}).get("per_lr"), level)
        band = ((v or {}).get("index") or {}).get("null", {}).get("band") or [math.nan, math.nan]
        out[f"band_lo_{short}"], out[f"band_hi_{short}"] = map(float, band)
    return out


def _paper_overlap(s: Setting, entry) -> float:
    """The paper's raw KDE overlap, recomputed from the distribution stage's saved t-SNE points."""
    folder = SM.run_dir(s, "visualization", *entry[:3], SM.run_extras(entry, dataset=s.dataset))
    res, pts = read_ok_results(folder / "results.json"), folder / "tsne_points.npy"
    if not res or not pts.is_file():
        return math.nan
    a = np.load(pts)
    return paper_kde_overlap(a[:, :2], a[:, 2].astype(int), res["forget_index"])


def cells(base: Setting, entry, seeds, *, replicates=(0,), attack: dict | None = None,
          paper_overlap: bool = True) -> list[dict]:
    """One dict per replicate and seed with every number of one run: the summary's cells (forget
    metrics, per-run attack readings, distribution metrics, time and training examples as % of the
    retrain run of the same replicate and seed) plus the index null bands and the paper's raw overlap."""
    retrain = entry_for("retrain", grid_entries(base.dataset, ()))
    out = []
    for p in replicates:
        for seed in seeds:
            s = replace(base, seed=seed, pretrain_seed=p)
            c = {k: v for k, v in SM.cell(s, *entry[:3], SM.run_extras(entry, attack=attack, dataset=s.dataset)).items()
                 if not k.startswith("_") or k == "_forget"}
            for key in ("time", "work"):
                c[f"{key}_pct"] = SM.time_pct(s, c[key], retrain, attack=attack, key=key)
            c.update(_bands(s, entry, attack), seed=seed, replicate=p)
            c["overlap_paper"] = _paper_overlap(s, entry) if paper_overlap else math.nan
            out.append(c)
    return out


VERDICT_FIELDS = ("verdict_out", "verdict_feat", "verdict_ood", "verdict_p_out", "verdict_p_feat", "verdict_p_ood",
                  "verdict_p_equiv_out", "verdict_p_equiv_feat", "verdict_p_equiv_ood", "rea_diff_out",
                  "rea_diff_feat", "rea_diff_ood", "replicates")


def verdict_fields(base: Setting, entries, seeds, *, replicates, attack: dict | None = None) -> list[dict]:
    """The replicated verdicts of ``entries`` as run.py's table gives them (one Holm family per game over
    these entries but ``baseline``), one dict of :data:`VERDICT_FIELDS` per entry, in order."""
    rows = SM.summarise(base, [tuple(e) for e in entries], list(seeds), attack=attack, replicates=list(replicates))
    return [{k: r.get(k) for k in VERDICT_FIELDS} for r in rows]


def mean_ci(values, level: float = 0.95) -> tuple[float, float, float, int]:
    """(mean, lower, upper, n) of the finite values: a Student-t interval over seeds (NaN bounds for n < 2)."""
    from scipy import stats  # lazy: start-up time

    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], dtype=float)
    if v.size == 0:
        return math.nan, math.nan, math.nan, 0
    m = float(v.mean())
    if v.size < 2:
        return m, math.nan, math.nan, 1
    half = float(stats.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    return m, m - half, m + half, int(v.size)


def collect(base: Setting, plan: Plan) -> dict:
    """Every number of the study for one dataset: ``grid`` {method: [cells]}, ``verdicts`` {method:
    :func:`verdict_fields`} (the grid as one table) and ``tradeoff`` [:class:`SweepRow`] (the sweep's
    points with baseline and retrain as a second table: its own Holm families)."""
    entries = grid_entries(base.dataset, plan.methods)
    grid = {e[0]: cells(base, e, plan.seeds, replicates=plan.reps, attack=plan.attack) for e in entries}
    verdicts = dict(zip(grid, verdict_fields(base, entries, plan.seeds, replicates=plan.reps, attack=plan.attack)))
    points = tradeoff_entries(base.dataset, plan.tradeoff, plan.tradeoff_methods)
    anchors = [e for e in entries if e[0] in ("baseline", "retrain")]
    sweep_v = verdict_fields(base, anchors + [p.entry for p in points], plan.tradeoff_seeds,
                             replicates=plan.tradeoff_reps, attack=plan.attack)[len(anchors):]
    sweep = [SweepRow(p.method, p.value, p.strength, p.replay,
                      cells(base, p.entry, plan.tradeoff_seeds, replicates=plan.tradeoff_reps, attack=plan.attack,
                            paper_overlap=False), v)
             for p, v in zip(points, sweep_v)]
    return {"dataset": base.dataset, "tag": base.tag, "forget_class": base.forget_class, "seeds": list(plan.seeds),
            "replicates": list(plan.reps), "tradeoff_replicates": list(plan.tradeoff_reps), "grid": grid,
            "verdicts": verdicts, "tradeoff": sweep}


def timed(fn, *args, **kwargs):
    """(result, seconds)."""
    t0 = time.perf_counter()
    return fn(*args, **kwargs), time.perf_counter() - t0
