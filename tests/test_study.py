"""The reproduction study (unlearn/study*.py): a tiny grid run through it, every aggregated number
checked against the per-run results.json files, and the document rebuilt identically."""
import json
import math
from pathlib import Path

import numpy as np
import pytest

from unlearn.study import plan as ST
from unlearn.study import report as SR
from unlearn.study.cli import run, write_document

from conftest import run_script

PLAN = ST.Plan("Digits", seeds=(0,), replicates=(0, 1), tradeoff="cross", tradeoff_seeds=(0,),
               tradeoff_replicates=(0,), methods=("negative_grad", "negative_grad_our", "OUR"),
               tradeoff_methods=("OUR",), attack=dict(trials=3, steps=10, retrain_refs=3))


@pytest.fixture(scope="module", autouse=True)
def small_runs():
    """A cheaper study than the shipped one, for every test of the module: retraining (and the references)
    for 8 epochs instead of pretraining's 30, and t-SNE on 300 points; the aggregation is what is tested."""
    import config

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(config.MU_METHOD_LIST, "Digits", [("retrain", 0, 8) if e[0] == "retrain" else e
                                                     for e in config.MU_METHOD_LIST["Digits"]])
        mp.setitem(config.DISTRIBUTION_MAX_POINTS, "Digits", 300)
        yield


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, small_runs):
    root = tmp_path_factory.mktemp("study")
    base = ST.setting("Digits", root / "log_files")
    done = run(PLAN, base, parts=["grid", "tradeoff"], jobs=1, dry_run=False, progress=False)
    assert all(not bad for _, _, bad in done.values()), done
    return root, base


def _load(base, replicate, stage, entry, seed=0):
    from dataclasses import replace

    from unlearn.pipeline import summary as SM

    s = replace(base, seed=seed, pretrain_seed=replicate)
    ex = SM.run_extras(entry, attack=PLAN.attack, dataset="Digits")
    return json.loads((SM.run_dir(s, stage, *entry[:3], ex) / "results.json").read_text())


def _index(attack_results, level):
    """The index at the lr with the highest two-sided AUC (the summary's rule), read straight from the file."""
    per = attack_results["per_lr"]
    lr = max(per, key=lambda k: per[k][level]["retrain_game"]["auc"])
    return per[lr][level]["index"]


def test_aggregates_match_the_runs(tiny):
    root, base = tiny
    data = ST.collect(base, PLAN)
    entries = {e[0]: e for e in ST.grid_entries("Digits", PLAN.methods)}
    assert set(data["grid"]) == {"baseline", "retrain", "negative_grad", "negative_grad_our", "OUR"}
    for m, e in entries.items():
        for c in data["grid"][m]:
            f, a, v = (_load(base, c["replicate"], st, e, c["seed"])
                       for st in ("unlearning", "mia_mu_attack", "visualization"))
            assert c["d_t"] == f["metrics"]["d_t"] and c["d_f"] == f["metrics"]["d_f"] and c["time"] == f["time"]
            assert c["work"] == f["work"]["retain_epochs"]
            for short, level in (("out", "output"), ("feat", "feature")):
                ix = _index(a, level)
                assert c[f"rea_index_{short}"] == ix["index"] and c[f"rea_dir_{short}"] == ix["direction"]
                assert [c[f"band_lo_{short}"], c[f"band_hi_{short}"]] == ix["null"]["band"]
            assert c["variance"] == v["metrics"]["tsne"]["intra_class_variance"]
            assert c["overlap"] == v["metrics"]["tsne"]["overlap"]
            assert np.isfinite(c["overlap_paper"]) and c["overlap_paper"] > 0
    assert {c["replicate"] for c in data["grid"]["OUR"]} == {0, 1}
    # the verdicts are run.py's table's for the same runs (one Holm family per game over the grid)
    from unlearn.pipeline import summary as SM

    rows = SM.summarise(base, [tuple(e) for e in entries.values()], [0], attack=PLAN.attack, replicates=[0, 1])
    for r in rows:
        assert {k: r.get(k) for k in ST.VERDICT_FIELDS} == data["verdicts"][r["method"]]
        assert r["verdict_ood"] in ("residual", "over-suppressed", "equivalent", "undetermined")
    # claim 2: paired differences by replicate, and their mean
    row = next(r for r in SR.claim2_rows(data["grid"], data["verdicts"]) if r["method"] == "negative_grad_our")
    want = [_index(_load(base, s, "mia_mu_attack", entries["negative_grad_our"]), "feature")["index"]
            - _index(_load(base, s, "mia_mu_attack", entries["negative_grad"]), "feature")["index"] for s in (0, 1)]
    retrain_work = [_load(base, s, "unlearning", entries["retrain"])["work"]["retain_epochs"] for s in (0, 1)]
    assert row["work_pct"] == pytest.approx([100 * _load(base, s, "unlearning", entries["negative_grad_our"])[
        "work"]["retain_epochs"] / w for s, w in zip((0, 1), retrain_work)])
    assert row["d_rea_index_feat"] == pytest.approx(want)
    m, lo, hi, n = ST.mean_ci(want)
    assert n == 2 and m == pytest.approx(np.mean(want)) and lo < m < hi
    assert next(r for r in SR.claim2_rows(data["grid"], data["verdicts"]) if r["method"] == "OUR")["against"] == "retrain"
    # the trade-off sweep: 5 strengths + 2 other replay lengths of OUR, on replicate 0
    sweep = data["tradeoff"]
    assert len(sweep) == 7 and {p.strength for p in sweep} == set(ST.STRENGTHS)
    for row in sweep:
        e = next(x.entry for x in ST.tradeoff_entries("Digits", "cross", ("OUR",))
                 if x.entry[1] == row.value and x.replay == row.replay)
        assert len(row.cells) == 1 and row.cells[0]["d_t"] == _load(base, 0, "unlearning", e)["metrics"]["d_t"]
        assert row.verdicts["verdict_feat"] and row.verdicts["replicates"] == 1
        assert _load(base, 0, "unlearning", e)["config"]["replay"]["epochs"] == row.replay


def test_verdict_rules_and_the_document_rebuild_identically(tiny):
    root, base = tiny
    data = {"Digits": ST.collect(base, PLAN)}
    vs = SR.verdicts(data["Digits"])
    assert [(v["claim"], v["part"]) for v in vs] == [
        (1, "retrain game"), (1, "OOD game"), (2, "removal, retrain game"), (2, "removal, OOD game"), (2, "price"),
        (3, "spread")]
    assert all(v["verdict"] in ("holds", "does not hold", "mixed", "undetermined") for v in vs)
    g, our = data["Digits"]["grid"], data["Digits"]["verdicts"]["OUR"]  # the only OUR-type run of the tiny grid
    labels = [our["verdict_out"], our["verdict_feat"]]
    assert vs[2]["verdict"] == ("holds" if labels == ["equivalent"] * 2 else "does not hold" if {
        "residual", "over-suppressed"} & set(labels) else "undetermined")
    assert vs[3]["verdict"] == {"equivalent": "holds", "undetermined": "undetermined"}.get(our["verdict_ood"],
                                                                                          "does not hold")
    cheap = [ST.mean_ci(SR.col(g["OUR"], k))[0] <= 12 for k in ("time_pct", "work_pct")]
    assert vs[4]["verdict"] == ("holds" if all(cheap) else "does not hold" if not any(cheap) else "mixed")
    out = root / "docs"
    doc = write_document(out, data, {})
    first = doc.read_text()
    for name in ("tradeoff_Digits", "indices_Digits"):
        assert (out / "reproduction" / f"{name}.png").stat().st_size > 0
        assert (out / "reproduction" / f"{name}.pdf").stat().st_size > 0
    assert "## Verdicts" in first and "### The trade-off curve" in first
    write_document(out, {"Digits": ST.collect(base, PLAN)}, {})
    assert doc.read_text() == first  # rerunning on finished results rebuilds the same tables


def test_claim_rules_on_known_verdicts():
    """Over-suppressed is not removal; equivalent only when every level is; undecided stays undetermined."""
    v = lambda out, feat: {"verdict_out": out, "verdict_feat": feat}  # noqa: E731
    assert SR.combined(v("residual", "equivalent"), SR.GAMES["retrain game"]) == "residual"
    assert SR.combined(v("over-suppressed", "equivalent"), SR.GAMES["retrain game"]) == "over-suppressed"
    assert SR.combined(v("equivalent", "undetermined"), SR.GAMES["retrain game"]) == "undetermined"
    assert SR.combined(v("equivalent", None), SR.GAMES["retrain game"]) == "no verdict"
    grade = SR._grade
    assert grade({"a": "equivalent", "b": "equivalent"}, want="equivalent") == "holds"
    assert grade({"a": "equivalent", "b": "over-suppressed"}, want="equivalent") == "does not hold"
    assert grade({"a": "equivalent", "b": "undetermined"}, want="equivalent") == "undetermined"
    assert grade({"a": "residual", "b": "residual"}, want="residual") == "holds"
    assert grade({"a": "residual", "b": "equivalent"}, want="residual") == "mixed"
    assert grade({"a": "over-suppressed", "b": "equivalent"}, want="residual") == "does not hold"
    assert grade({"a": "residual", "b": "undetermined"}, want="residual") == "undetermined"
    assert grade({}, want="residual") == "undetermined"


def test_mean_ci_known_answer():
    m, lo, hi, n = ST.mean_ci([1.0, 2.0, 3.0])
    assert (m, n) == (2.0, 3) and hi - m == pytest.approx(4.302653 * 1 / math.sqrt(3), rel=1e-5)
    assert ST.mean_ci([float("nan"), 5.0])[1:] == (pytest.approx(float("nan"), nan_ok=True),) * 2 + (1,)


def test_paper_overlap_known_cases():
    from unlearn.evaluation.distribution import kde_overlap, paper_kde_overlap

    rng = np.random.default_rng(0)
    a = rng.normal(size=(200, 2))
    same = np.vstack([a, rng.normal(size=(200, 2))])
    apart = np.vstack([a, rng.normal(size=(200, 2)) + 30])
    y = np.r_[np.zeros(200), np.ones(200)]
    assert paper_kde_overlap(same, y, 0) > 50 * paper_kde_overlap(apart, y, 0)
    assert kde_overlap(same, y, 0).overlap > 0.8 > 0.01 > kde_overlap(apart, y, 0).overlap


def test_bad_dataset_is_one_line(tmp_path):
    r = run_script(Path("studies") / "reproduction.py", "--datasets", "Cifar20", "--log-root", tmp_path / "x",
                   "--out", tmp_path / "docs")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "no plan for Cifar20" in r.stderr
    assert not any(tmp_path.iterdir())
