"""run.py --scenario sample: the job graph, a small end-to-end Digits run whose summary is recomputed
here from the runs' own files, resume, and bad input (one line, exit 2, nothing written)."""
import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

import config
from conftest import run_inprocess
from unlearn.evaluation.lira import against_retrained
from unlearn.evaluation.rea.decide import decide_family
from unlearn.launcher import main as launch
from unlearn.methods.cli import sample_methods
from unlearn.methods.entries import normalise_entry
from unlearn.pipeline.runner import pending_jobs
from unlearn.pipeline.sample_jobs import build_sample_jobs, split_methods

METHODS = [("baseline", 0, 0), ("retrain", 0.01, 4), ("finetune", 0.1, 2)]
SMALL = dict(shadows=3, shadow_in=1, shadow_epochs=3, members=40, non_members=40, rea_epochs=[1, 1])
REFS = 3


def defaults(methods=METHODS):
    return dict(net=None, dataset="Digits", classes=None, forget_class=None, seeds=[0], weight_path=None,
                methods=methods, attack=None, stages=["pretrain", "forget", "attack", "distribution"],
                python_file=None, jobs=1, replicates=2, scenario="sample", sample_attack=SMALL)


def argv(root, *extra):
    return ["--log-root", str(root), "--pretrain-epochs", "6", "--retrain_refs", str(REFS), "--no-progress", *extra]


def test_the_graph_attacks_every_method_and_reference_after_the_shadows(digits):
    s = replace(digits, forget_percent=10.0)
    entries = [normalise_entry(m) for m in config.MU_METHOD_LIST["Digits"]]
    kept, dropped = split_methods(entries)
    assert set(dropped) == {m[0] for m in entries} - set(sample_methods()) and "UNSIR" in dropped
    jobs = build_sample_jobs(s, methods=kept, seeds=[0], stages=["pretrain", "forget", "attack"], attack={},
                             retrain_refs=4, replicates=[0, 1])
    by = {j.name: j for j in jobs}
    shadows = by["lira-shadows"]
    assert shadows.if_needed and "--shadows-only" in shadows.cmd
    pre = [j for j in jobs if j.name.startswith("pretrain")]
    assert pre and all("--forget_percent" not in j.cmd for j in pre)
    forget = [j for j in jobs if j.name.startswith("forget:")]
    assert all(Path(j.cmd[1]).name == "forget_sample_main.py" and "--forget_percent" in j.cmd for j in forget)
    assert len(forget) == 2 * len(kept) + 4
    attacks = [j for j in jobs if j.name.startswith("attack:")]
    assert len(attacks) == len(forget)
    for a in attacks:
        assert Path(a.cmd[1]).name == "mia_on_mu_main_sample.py" and "lira-shadows" in a.deps
        assert any(by[d].name.startswith("forget:") and by[d].cmd[2:] == a.cmd[2:len(by[d].cmd)] for d in a.deps)
    ref_seeds = sorted(int(a.cmd[a.cmd.index("-seed") + 1]) for a in attacks if a.group == "attack:references")
    assert ref_seeds == [config.REFERENCE_SEED_BASE + r for r in range(4)]


@pytest.fixture(scope="module")
def sample_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sample_run")
    rc = launch(argv(root), defaults())
    return root, rc


def _stage(root, stage):
    (d,) = (Path(root) / "forget_sample_main").glob(f"*/{stage}")
    return d


def test_the_summary_is_what_the_runs_say(sample_run):
    root, rc = sample_run
    assert rc == 0
    rows = {r["method"]: r for r in csv.DictReader((root / "sample_summary.csv").open())}
    assert [m for m in rows if not m.startswith("null")] == [m for m, _, _ in METHODS]
    attack = _stage(root, "mia_sample_attack")
    refs = [attack / f"retrain-0.01-4-seed{config.REFERENCE_SEED_BASE + r}" for r in range(REFS)]

    def auc(folder, level):
        return json.loads((folder / "results.json").read_text())["levels"][level]["online"]["auc"]

    def scores(folder, level):
        with np.load(folder / "scores.npz") as z:
            return z[f"{level}_score"], z["member"]

    null = next(r for k, r in rows.items() if k.startswith("null"))
    for level in ("plain", "rea"):
        ref_auc = np.array([auc(f, level) for f in refs])
        assert float(null[f"lira_auc_{level}"]) == pytest.approx(ref_auc.mean())
        ref_scores = np.stack([scores(f, level)[0] for f in refs])
        loo = [roc_auc_score(scores(refs[i], level)[1], against_retrained(ref_scores[i], np.delete(ref_scores, i, 0)))
               for i in range(REFS)]
        assert float(null[f"ulira_auc_{level}"]) == pytest.approx(np.mean(loo))
        models = {m: [attack / (f"{m}-{p1}-{p2}" + ("-pre1" if p else "")) for p in (0, 1)] for m, p1, p2 in METHODS}
        stats = {m: [auc(f, level) for f in fs] for m, fs in models.items()}
        k_sd = config.REA_MARGIN_SD
        want = decide_family(stats, ref_auc, margin=k_sd * ref_auc.std(ddof=1), alpha=config.REA_ALPHA,
                             outside=["baseline"])
        for m, d in want.items():
            assert rows[m][f"verdict_{level}"] == d.label
            assert float(rows[m][f"p_{level}"]) == pytest.approx(d.p_adjusted if m != "baseline" else d.p_diff)
            gain = np.mean([auc(f, "rea") - auc(f, "plain") for f in models[m]]) if level == "rea" else None
            if gain is not None:
                assert float(rows[m]["rea_gain"]) == pytest.approx(gain)
        mine = [roc_auc_score(scores(f, level)[1], against_retrained(scores(f, level)[0], ref_scores))
                for f in models["retrain"]]
        assert float(rows["retrain"][f"ulira_auc_{level}"]) == pytest.approx(np.mean(mine))
    md = (root / "sample_summary.md").read_text()
    assert "forget 10% of the training samples" in md and "| baseline |" in md
    assert not (root / "summary.md").exists()  # the class-wise table is not written by the sample scenario
    assert all((root / f"sample_summary_auc.{ext}").is_file() for ext in ("png", "pdf"))


def test_a_second_sample_run_recomputes_nothing(sample_run):
    root, _ = sample_run
    base = (root / "sample_summary.md").read_text()
    from unlearn.store.setting import Setting
    s = Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                data_root=config.DATA_ROOT, log_root=str(root), forget_percent=10.0)
    jobs = build_sample_jobs(s, methods=[normalise_entry(m) for m in METHODS], seeds=[0],
                             stages=["pretrain", "forget", "attack"], attack=SMALL,
                             extra_pretrain=["--epochs", "6"], retrain_refs=REFS, replicates=[0, 1])
    assert pending_jobs(jobs, force=False) == []
    assert launch(argv(root), defaults()) == 0
    assert (root / "sample_summary.md").read_text() == base


@pytest.mark.parametrize("extra,what", [(["--forget_percent", "100"], "outside (0, 100)"),
                                        (["--forget_percent", "0"], "outside (0, 100)"),
                                        (["--tune"], "--tune tunes the class-wise scenario")])
def test_bad_sample_run_input_is_one_line_exit_2_and_writes_nothing(tmp_path, extra, what):
    root = tmp_path / "logs"
    r = run_inprocess("run.py", "--scenario", "sample", "--log-root", root, "--no-progress", *extra)
    assert r.returncode == 2 and what in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not root.exists()


def test_python_file_of_a_sample_script_runs_that_stage_sample_wise(tmp_path, capsys):
    root = tmp_path / "logs"
    rc = launch(["--log-root", str(root), "--dry-run", "--no-progress"],
                {**defaults(), "python_file": "forget_sample_main.py", "replicates": 1, "scenario": "class"})
    out = capsys.readouterr().out
    cmds = [line for line in out.splitlines() if not line.startswith("#")]
    assert rc == 0 and cmds and all(" forget_sample_main.py " in c for c in cmds)
    assert not root.exists()


@pytest.mark.parametrize("attack,what", [(dict(shadows=1), "at least 2 shadows"), (dict(shadow=8), "unknown"),
                                         (dict(rea_lrs=[0.01]), "one epoch count per lr")])
def test_bad_sample_attack_settings_in_run_py_stop_before_anything_runs(tmp_path, capsys, attack, what):
    from unlearn.core.errors import UsageError

    root = tmp_path / "logs"
    with pytest.raises(UsageError, match=what):
        launch(argv(root), {**defaults(), "sample_attack": attack})
    assert not root.exists()
