"""The summary table: known answers over seeds, missing seeds shown, every cell equal to the runs' results.json."""
import csv
import dataclasses
import json
import math

import numpy as np
import pytest

import config
from conftest import DIGITS_ATTACK, run_script
from unlearn.evaluation.rea import reference as ref
from unlearn.pipeline import summary as SM
from unlearn.store.checkpoint import atomic_write_json

METHODS = [("SCRUB", 0.01, 5), ("finetune", 0.1, 20)]


def _level(index, ci, direction, auc2, bacc, ood, steps, null_index=(0.1, -0.1), null_band=(-0.5, 0.5)):
    return {"index": {"index": index, "ci": list(ci), "direction": direction,
                      "null": {"values": list(null_index), "band": list(null_band)}},
            "retrain_game": {"auc": auc2, "balanced_accuracy_at_fpr_5": bacc, "auc_one_sided": 0.9,
                             "tpr_at_fpr_5": 0.5, "tpr_at_fpr_1": 0.25,
                             "null": {"auc": {"values": [0.4, 0.6]},
                                      "balanced_accuracy_at_fpr_5": {"values": [0.45, 0.55]}}},
            "ood_game": {"auc": ood, "null": {"values": [0.7, 0.8]}, "gap": ood - 0.5, "direction": direction},
            "steps_to_threshold": {"model": {"member": steps}}}


def _write(s, stage, method, p1, p2, obj):
    atomic_write_json(s.stage_dir(stage, method, p1, p2) / "results.json", {"status": "ok", **obj})


@pytest.fixture()
def fake(tmp_path):
    """Three seeds of hand-made results: SCRUB's attack is missing on seed 2, finetune's forget run on seed 1."""
    from unlearn.store.setting import Setting

    base = Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   log_root=str(tmp_path), seed=0)
    for seed, (d_t, idx, auc2) in enumerate([(90.0, 0.2, 0.8), (92.0, 0.4, 0.9), (94.0, None, None)]):
        s = dataclasses.replace(base, seed=seed)
        _write(s, "unlearning", "SCRUB", 0.01, 5, {"metrics": {"d_t": d_t, "d_f": 0.0, "d_r": 99.0, "mia": 5.0},
                                                   "time": 2.0 + seed})
        _write(s, "visualization", "SCRUB", 0.01, 5,
               {"metrics": {"tsne": {"intra_class_variance": 10.0 * (seed + 1), "silhouette": 0.5, "overlap": 0.1}}})
        if idx is not None:
            weak = _level(0.0, (-0.1, 0.1), "inside null band", 0.5, 0.5, 0.5, 20.0)  # the weaker lr: not chosen
            strong = {lv: _level(idx, (idx - 0.1, idx + 0.2), "residual", auc2, 0.7, 0.6 + seed / 10, 8.0 + seed)
                      for lv in ("output", "feature")}
            _write(s, "mia_mu_attack", "SCRUB", 0.01, 5,
                   {"references": [1, 2, 3], "per_lr": {"0.01": {"output": weak, "feature": weak}, "0.05": strong}})
        if seed != 1:
            _write(s, "unlearning", "finetune", 0.1, 20,
                   {"metrics": {"d_t": 80.0, "d_f": 0.0, "d_r": 99.0, "mia": 1.0}, "time": 1.0})
    return base


def test_known_answer_mean_and_std_over_seeds(fake):
    rows = {r["method"]: r for r in SM.summarise(fake, METHODS, [0, 1, 2])}
    r = rows["SCRUB"]
    assert r["d_t"] == pytest.approx(92.0) and r["d_t_std"] == pytest.approx(2.0) and r["d_t_n"] == 3
    assert r["variance"] == pytest.approx(20.0) and r["variance_std"] == pytest.approx(10.0)
    assert r["rea_index_out"] == pytest.approx(0.3) and r["rea_index_out_std"] == pytest.approx(math.sqrt(0.02))
    assert r["rea_index_out_n"] == 2 and r["rea_lr_out"] == 0.05  # the lr with the higher two-sided AUC
    assert r["rea_auc2_feat"] == pytest.approx(0.85) and r["rea_auc_ood"] == pytest.approx(0.65)
    assert (r["rea_lo_out"], r["rea_hi_out"]) == pytest.approx((0.1, 0.6))  # the widest of the seeds' intervals
    assert r["rea_dir_ood"] == "residual" and r["rea_steps_out"] == pytest.approx(8.5)
    assert (r["seeds"], r["seeds_requested"]) == (3, 3)
    f = rows["finetune"]
    assert (f["seeds"], f["d_t_n"]) == (2, 2) and f["d_t"] == 80.0 and f["d_t_std"] == 0.0
    assert math.isnan(f["rea_index_out"]) and f["rea_dir_ood"] is None and f["verdict_out"] is None


def test_replicated_verdicts_known_answer(tmp_path):
    """Three replicates: one method 3 reference sd above the 20 references, one among them, and the
    baseline (left out of the Holm family); the verdicts are decide_means' on the replicates' statistics."""
    from unlearn.evaluation.rea.decide import decide_means, holm
    from unlearn.store.setting import Setting

    base = Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   log_root=str(tmp_path), seed=0)
    rng = np.random.default_rng(0)
    refs = 0.3 + 0.02 * rng.standard_normal(20)
    stats = {"baseline": [0.9, 0.92, 0.91], "SCRUB": [0.36, 0.37, 0.35], "finetune": [0.30, 0.31, 0.29]}
    ref_gaps = 0.1 + 0.05 * rng.standard_normal(20)  # the paper's OOD game: SCRUB among the references there
    gaps = {"baseline": [0.5, 0.52, 0.51], "SCRUB": [0.09, 0.11, 0.10], "finetune": [-0.2, -0.22, -0.21]}
    for method, values in stats.items():
        for p, v in enumerate(values):
            s = dataclasses.replace(base, pretrain_seed=p)
            area = {"model": {"member": v}, "references": [{"member": float(x)} for x in refs]}
            lv = {**_level(0.1, (0.0, 0.2), "residual", 0.6, 0.6, 0.6, 9.0), "area": area}
            lv["ood_game"] = {**lv["ood_game"], "gap": gaps[method][p], "gap_null": {"values": list(ref_gaps)}}
            _write(s, "unlearning", method, 0, 0, {"metrics": {"d_t": 90.0, "d_f": 0.0, "d_r": 99.0, "mia": 5.0},
                                                   "time": 1.0})
            _write(s, "mia_mu_attack", method, 0, 0, {"references": [{"seed": 1000 + i} for i in range(20)],
                                                      "per_lr": {"0.05": {"output": lv, "feature": lv}}})
    methods = [(m, 0, 0) for m in stats]
    rows = {r["method"]: r for r in SM.summarise(base, methods, [0], replicates=[0, 1, 2])}
    margin = config.REA_MARGIN_SD * refs.std(ddof=1)
    plain = {m: decide_means(np.array(v), refs, margin=margin, alpha=config.REA_ALPHA) for m, v in stats.items()}
    adj = dict(zip(["SCRUB", "finetune"], holm([plain["SCRUB"].p_diff, plain["finetune"].p_diff])))
    assert rows["baseline"]["verdict_out"] == plain["baseline"].label == "residual"
    assert rows["SCRUB"]["verdict_out"] == rows["SCRUB"]["verdict_feat"] == "residual"
    assert rows["SCRUB"]["verdict_p_out"] == pytest.approx(adj["SCRUB"]) and adj["SCRUB"] > plain["SCRUB"].p_diff
    assert rows["finetune"]["verdict_out"] == decide_means(np.array(stats["finetune"]), refs, margin=margin,
                                                           p_adjusted=adj["finetune"]).label == "equivalent"
    assert rows["SCRUB"]["rea_diff_out"] == pytest.approx(np.mean(stats["SCRUB"]) - refs.mean())
    gm = config.REA_MARGIN_SD * ref_gaps.std(ddof=1)
    g_first = {m: decide_means(np.array(v), ref_gaps, margin=gm) for m, v in gaps.items()}
    g_adj = dict(zip(["SCRUB", "finetune"], holm([g_first["SCRUB"].p_diff, g_first["finetune"].p_diff])))
    for m in gaps:  # judged apart from the retrain game: its own statistic, references and Holm family
        assert rows[m]["verdict_ood"] == decide_means(np.array(gaps[m]), ref_gaps, margin=gm,
                                                      p_adjusted=g_adj.get(m)).label
    assert [rows[m]["verdict_ood"] for m in gaps] == ["residual", "equivalent", "over-suppressed"]
    assert rows["SCRUB"]["verdict_p_ood"] == pytest.approx(g_adj["SCRUB"])
    assert (rows["SCRUB"]["replicates"], rows["SCRUB"]["seeds"], rows["SCRUB"]["seeds_requested"]) == (3, 3, 3)
    md = SM.to_markdown(list(rows.values()))
    assert "residual (p " in md and "; 3/3 models)" in md and "equivalent (TOST p " in md


def test_markdown_shows_intervals_missing_seeds_and_the_null_row(fake):
    rows = SM.summarise(fake, METHODS, [0, 1, 2])
    null = SM.null_row(fake, METHODS, [0, 1, 2])
    lines = {l.split(" | ")[0].lstrip("| "): l.split(" | ") for l in SM.to_markdown(rows + [null]).splitlines()[2:]}
    head = SM.to_markdown(rows).splitlines()[0].strip("| ").split(" | ")
    scrub = dict(zip(head, lines["SCRUB"]))
    assert scrub["runs"] == "3/3" and scrub["replicates"] == "1/1" and scrub["d_t"] == "92.00 ± 2.00"
    assert scrub["rea_index_out"] == "0.30 ± 0.14 [0.10, 0.60] (n=2)"
    assert scrub["rea_dir_ood"] == "residual (n=2)"
    assert dict(zip(head, lines["finetune"]))["runs"] == "2/3"
    n = dict(zip(head, lines[null["method"]]))
    assert null["method"] == "null (3 refs)" and n["rea_index_out"] == "0.00 ± 0.12 [-0.50, 0.50]"  # seeds 0, 1 pooled
    assert n["rea_auc2_out"] == "0.500 ± 0.115" and n["rea_auc_ood"] == "0.750 ± 0.058"


def test_index_is_undefined_where_the_anchor_is_inside_the_band(tmp_path):
    """The guard of the display index: a run whose null band holds the anchor (index 1) gives no index."""
    from unlearn.store.setting import Setting

    base = Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   log_root=str(tmp_path), seed=0)
    for seed, band_ in enumerate([(-1.5, 1.5), (-0.5, 0.5)]):
        s = dataclasses.replace(base, seed=seed)
        _write(s, "unlearning", "SCRUB", 0.01, 5, {"metrics": {"d_t": 90.0, "d_f": 0.0, "d_r": 99.0, "mia": 5.0},
                                                   "time": 1.0})
        lv = _level(0.4 + seed, (0.3, 0.5 + seed), "residual", 0.8, 0.7, 0.6, 8.0, null_band=band_)
        _write(s, "mia_mu_attack", "SCRUB", 0.01, 5, {"references": [1, 2, 3], "per_lr": {"0.05": {"output": lv}}})
    one = SM.summarise(base, METHODS[:1], [0])[0]
    assert math.isnan(one["rea_index_out"]) and one["rea_index_out_undefined"] == 1
    assert SM.format_cell(one, "rea_index_out") == "undefined (anchor inside the references' band in 1 runs)"
    two = SM.summarise(base, METHODS[:1], [0, 1])[0]  # only seed 1's index counts
    assert two["rea_index_out"] == pytest.approx(1.4) and two["rea_index_out_n"] == 1
    assert SM.format_cell(two, "rea_index_out").startswith("1.40")


def test_sense_check_of_verdicts_against_the_two_sided_auc():
    null = {"rea_auc2_out": 0.5, "rea_auc2_out_std": 0.1, "rea_auc2_feat": 0.5, "rea_auc2_feat_std": float("nan")}
    rows = [{"method": m, "verdict_out": v, "rea_auc2_out": a, "verdict_feat": v, "rea_auc2_feat": a}
            for m, v, a in [("a", "residual", 0.9), ("b", "residual", 0.6), ("c", "equivalent", 0.9),
                            ("d", "equivalent", 0.55), ("e", "undetermined", 0.9), ("baseline", "residual", 0.5),
                            ("f", "over-suppressed", 0.71)]]
    SM.sense_checks(rows, null)
    got = {r["method"]: r["sense_out"] for r in rows}
    assert got == {"a": "agrees", "b": "disagrees: residual but two-sided AUC 0.60 within the null's 0.70",
                   "c": "disagrees: equivalent but two-sided AUC 0.90 above the null's 0.70", "d": "agrees",
                   "e": None, "baseline": None, "f": "agrees"}
    assert all(r["sense_feat"] is None for r in rows)  # no null spread: nothing to check against
    SM.sense_checks(rows, None)
    assert all(r["sense_out"] is None for r in rows)


def test_direction_votes_over_seeds():
    cells = [{"rea_dir_ood": d, **{k: float("nan") for k in SM._numeric_keys()}}
             for d in ("residual", "inside null band", "residual")]
    assert SM._aggregate(cells, 3)["rea_dir_ood"] == "residual (2/3)"


def test_csv_has_every_column_and_blank_for_missing(fake):
    text = SM.to_csv(SM.summarise(fake, METHODS, [0, 1, 2]))
    rows = list(csv.DictReader(text.splitlines()))
    assert [r["method"] for r in rows] == ["SCRUB", "finetune"]
    assert rows[1]["rea_index_out"] == "" and "nan" not in text.lower()
    assert {"rea_index_out", "rea_index_out_std", "rea_index_out_n", "verdict_feat", "rea_lo_out"} <= set(rows[0])


# ------------------------------------------------------------------ against real runs

REAL = [("baseline", 0, 0), ("negative_grad", 0.01, 2), ("negative_grad_our", None, None)]


@pytest.fixture(scope="module")
def real(digits, pretrained):
    """Real Digits runs of two methods (forget, attack, distribution) with the default reference population."""
    from unlearn.stages.attack import AttackConfig, reminiscence_attack
    from unlearn.stages.forget import unlearn_run
    from unlearn.methods import resolve_paras

    retrain = resolve_paras(*next(m for m in config.MU_METHOD_LIST["Digits"] if m[0] == "retrain")[:3])
    methods = [(m, *resolve_paras(m, p1, p2)) for m, p1, p2 in REAL] + [("retrain", *retrain)]
    cfg = AttackConfig(**DIGITS_ATTACK)
    have = {s for s, _ in ref.find_references(digits, cfg.retrain_refs)}
    for seed in ref.reference_seeds(cfg.retrain_refs):
        if seed not in have:
            unlearn_run(dataclasses.replace(digits, seed=seed), method="retrain", para1=retrain[0],
                        para2=retrain[1], device="cpu", progress=False)
    for m, p1, p2 in methods:
        unlearn_run(digits, method=m, para1=p1, para2=p2, device="cpu", progress=False)
        reminiscence_attack(digits, method=m, para1=p1, para2=p2, cfg=cfg, device="cpu", progress=False)
    r = run_script("run-distribution-metric.py", "--dataset", "Digits", "--log-root", digits.log_root,
                   "--max-points", "600", "--runs", *[f"{m}:{p1}:{p2}" for m, p1, p2 in methods])
    assert r.returncode == 0, r.stderr
    return methods


def _expected(s, method, p1, p2, retrain):
    """Every summary column of one run, read straight from its results.json files."""
    load = lambda stage, m=method, a=p1, b=p2: json.loads((s.stage_dir(stage, m, a, b) / "results.json").read_text())
    f, a, v = load("unlearning"), load("mia_mu_attack"), load("visualization")
    t = v["metrics"]["tsne"]
    out = {**{k: f["metrics"][k] for k in ("d_t", "d_f", "d_r", "mia", "zrf")}, "time": f["time"],
           "time_pct": 100 * f["time"] / load("unlearning", *retrain)["time"], "variance": t["intra_class_variance"],
           "silhouette": t["silhouette"], "overlap": t["overlap"]}
    for short, level in (("out", "output"), ("feat", "feature")):
        lr = max(a["per_lr"], key=lambda k: a["per_lr"][k][level]["retrain_game"]["auc"])
        lv = a["per_lr"][lr][level]
        out.update({f"rea_index_{short}": lv["index"]["index"], f"rea_auc2_{short}": lv["retrain_game"]["auc"],
                    f"rea_bacc_{short}": lv["retrain_game"]["balanced_accuracy_at_fpr_5"]})
        if short == "out":
            out["rea_auc_ood"] = lv["ood_game"]["auc"]
            out["rea_dir_ood"] = lv["ood_game"]["direction"]
            out["rea_steps_out"] = lv["steps_to_threshold"]["model"]["member"]
    return out


def _expected_verdicts(s, runs) -> dict:
    """Each run's verdict columns from its attack results.json: its statistic at the first lr against the
    references', Holm across the runs but baseline's."""
    from unlearn.evaluation.rea.decide import decide_means, holm

    out = {m: {} for m, _, _ in runs}
    for short, level in (("out", "output"), ("feat", "feature")):
        area = {m: next(iter(json.loads((s.stage_dir("mia_mu_attack", m, a, b) / "results.json").read_text())[
            "per_lr"].values()))[level]["area"] for m, a, b in runs}
        refs = np.array([r["member"] for r in area[runs[0][0]]["references"]])
        margin = config.REA_MARGIN_SD * refs.std(ddof=1)
        first = {m: decide_means(np.array([area[m]["model"]["member"]]), refs, margin=margin) for m in area}
        family = [m for m in first if m != "baseline"]
        adj = dict(zip(family, holm([first[m].p_diff for m in family])))
        for m in area:
            d = decide_means(np.array([area[m]["model"]["member"]]), refs, margin=margin, p_adjusted=adj.get(m))
            out[m].update({f"verdict_{short}": d.label, f"rea_diff_{short}": d.diff})
    ood = {m: next(iter(json.loads((s.stage_dir("mia_mu_attack", m, a, b) / "results.json").read_text())[
        "per_lr"].values()))["output"]["ood_game"] for m, a, b in runs}  # the paper's game: gaps
    refs = np.array(ood[runs[0][0]]["gap_null"]["values"])
    margin = config.REA_MARGIN_SD * refs.std(ddof=1)
    first = {m: decide_means(np.array([g["gap"]]), refs, margin=margin) for m, g in ood.items()}
    adj = dict(zip([m for m in first if m != "baseline"], holm([first[m].p_diff for m in first if m != "baseline"])))
    for m, g in ood.items():
        out[m]["verdict_ood"] = decide_means(np.array([g["gap"]]), refs, margin=margin, p_adjusted=adj.get(m)).label
    return out


def test_every_summary_cell_matches_the_runs(real, digits):
    rows, md = SM.write_summary(digits, real, [digits.seed])
    disk = {r["method"]: r for r in csv.DictReader((SM.Path(digits.log_root) / "summary.csv").open())}
    retrain = next(m for m in real if m[0] == "retrain")
    verdicts = _expected_verdicts(digits, real)
    checked = 0
    for method, p1, p2 in real:
        exp = {**_expected(digits, method, p1, p2, retrain), **verdicts[method]}
        assert set(exp) == {k for k, _ in SM.COLUMNS}  # no column escapes the comparison
        for k, v in exp.items():
            if isinstance(v, str):
                assert disk[method][k] == v, (method, k)
            else:
                assert float(disk[method][k]) == pytest.approx(v, rel=1e-9, abs=1e-12), (method, k)
            checked += 1
        assert disk[method]["seeds"] == "1"
    assert checked == len(real) * len(SM.COLUMNS)
    assert (SM.Path(digits.log_root) / "summary_comparison.png").stat().st_size > 0
    refs = DIGITS_ATTACK["retrain_refs"]
    assert f"null ({refs} refs)" in (SM.Path(digits.log_root) / "summary.md").read_text()


def test_real_verdicts_make_sense(real, digits):
    rows = {r["method"]: r for r in SM.summarise(digits, real, [digits.seed])}
    assert rows["baseline"]["rea_index_out"] == pytest.approx(1.0)
    assert rows["baseline"]["verdict_out"] == rows["baseline"]["verdict_feat"] == "residual"
    for level in ("out", "feat"):  # one retrained model beside the references: no difference shown
        assert rows["retrain"][f"verdict_{level}"] in ("undetermined", "equivalent")
        assert rows["retrain"][f"decision_{level}"]["test"] == "prediction"  # K = 1
    assert np.isfinite(rows["negative_grad"]["rea_index_feat"])
