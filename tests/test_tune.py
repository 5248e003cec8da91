"""run.py --tune / tune_method.py: declared search spaces, a study that resumes after a kill, the grid's use
of a tuned setting and the provenance it records."""
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest

import config
from conftest import ROOT, run_inprocess
from unlearn.core.errors import UsageError
from unlearn.methods import check_space, get_method, list_methods, param, register_method, search_space
from unlearn.store.setting import Setting
from unlearn.methods.entries import normalise_entry as normal_entry
from unlearn.tune.folders import study_folder
from unlearn.tune.search import tune
from unlearn.tune.space import default_values
from unlearn.tune.grid import tuned_entries

PRETRAIN = ["--pretrain-epochs", "8"]  # a quick model: what is tested is the machinery, not the numbers


def setting(root, seed=0) -> Setting:
    return Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=4, ood_classes=[8, 9],
                   data_root=str(root / "data"), log_root=str(root), seed=seed)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("tune")


# ---------------------------------------------------------------- (d) every registered method's space


@pytest.mark.parametrize("method", list_methods())
def test_every_registered_method_has_a_valid_space(method):
    spec, our = get_method(method)
    space = search_space(method)
    assert check_space(spec, space, our=our) == space
    if method in ("baseline", "retrain"):
        assert space == ()
    else:
        assert space, f"{method} declares no search space"
        if our:  # _our variants and OUR search their over-unlearning settings and the replay length
            assert "replay_epochs" in {p.name for p in space}
    assert spec.space_text  # what --help shows


@pytest.mark.parametrize("dataset", ["Digits", "FashionMNIST"])
def test_config_settings_lie_inside_the_declared_spaces(dataset):
    """The spaces are set around the hand-tuned settings, so the default trial is a point of the space."""
    for entry in config.MU_METHOD_LIST[dataset]:
        e = normal_entry(entry)
        space = search_space(e[0])
        for p in space:
            v = default_values(e, space)[p.name]
            assert (v in p.choices) if p.kind == "choice" else p.low <= v <= p.high, (dataset, e[0], p.name, v)


# ---------------------------------------------------------------- (b) bad spaces


@pytest.mark.parametrize("bad, words", [
    (param("para1", 0.1, 0.01, log=True), ["para1", "below"]),
    (param("para1", 0.0, 0.1, log=True), ["log", "above 0"]),
    (param("para2", 1.5, 4, kind=int), ["whole"]),
    (param("para2", 1, 4), ["kind=int"]),
    (param("nosuch", 1, 2), ["nosuch", "para1", "replay_epochs"]),
    (param("T", choices=("a",), kind="choice"), ["two or more"]),
    (param("para1", float("nan"), 1.0), ["finite"]),
])
def test_bad_space_is_a_one_line_usage_error(bad, words):
    spec, _ = get_method("badteacher")
    with pytest.raises(UsageError) as e:
        check_space(spec, (bad,), our=True)
    msg = str(e.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_space_at_registration_registers_nothing():
    with pytest.raises(UsageError, match="below"):
        register_method("bad_space_method", para1="learning rate", para2="epochs", defaults=(0.1, 1),
                        space=(param("para1", 1.0, 0.1),))(lambda ctx, p1, p2: ctx.model)
    assert "bad_space_method" not in list_methods()
    with pytest.raises(UsageError, match="is not a setting"):
        check_space(get_method("finetune")[0], (param("replay_epochs", 1, 3, kind=int),), our=False)  # _our only


@pytest.mark.parametrize("args, word", [
    (["-method", "SalUn", "--space", "para1=0.1:0.01:log"], "below"),
    (["-method", "SalUn", "--space", "nosuch=1:2"], "nosuch"),
    (["-method", "SalUn", "--space", "para1"], "NAME=LOW:HIGH"),
    (["-method", "nosuch"], "unknown method"),
    (["-method", "retrain"], "not tuned"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path, args, word):
    p = run_inprocess("tune_method.py", "--dataset", "Digits", *args, "--log-root", tmp_path / "logs")
    assert p.returncode == 2, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1 and word in p.stderr, p.stderr
    assert not (tmp_path / "logs").exists()


# ---------------------------------------------------------------- (a) resume after a kill


def _finished(db) -> list[int]:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30) as c:
            return [n for (n,) in c.execute("select number from trials where state in ('COMPLETE', 'PRUNED')")]
    except sqlite3.Error:
        return []


def test_killed_study_resumes_and_keeps_its_trials(root):
    import optuna

    budget = 6
    cmd = [sys.executable, "tune_method.py", "--dataset", "Digits", "-method", "FT_prune", "--log-root", str(root),
           "--tune_trials", str(budget), "--tune_threads", "1", "--no-progress", *PRETRAIN]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    db = study_folder(setting(root), "FT_prune") / "study.db"
    p = subprocess.Popen(cmd, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    deadline = time.time() + 400
    while time.time() < deadline and not _finished(db) and p.poll() is None:
        time.sleep(0.1)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    before = _finished(db)
    assert 1 <= len(before) < budget, f"killed after {len(before)} of {budget} trials"
    values = {t.number: t.value for t in optuna.load_study(study_name=None, storage=f"sqlite:///{db}").trials
              if t.number in before}
    assert not (db.parent / "best.json").exists()  # written only when a tuning ends

    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name=None, storage=f"sqlite:///{db}")
    finished = [t for t in study.trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == budget
    assert all(study.trials[n].value == v for n, v in values.items())  # earlier trials kept, not rerun
    assert sum(bool(t.user_attrs.get("default")) for t in finished) == 1  # the default ran once
    best = json.loads((db.parent / "best.json").read_text())
    assert best["trials"]["finished"] == budget and best["study"] == study.study_name
    assert best["value"] == min(t.value for t in finished if t.state.name == "COMPLETE")
    assert (db.parent / "history.png").is_file() and "FT_prune" in r.stdout


# ---------------------------------------------------------------- (c) the grid uses a tuned setting


@pytest.mark.numerical
def test_grid_runs_the_tuned_setting_and_records_its_study(root, capsys):
    from unlearn.launcher import main as launch

    s = setting(root)
    # The default trial collapses any model: SGD at lr 0.1 with weight decay 9 scales every weight by
    # 1 - 0.9 per step (momentum 0.9 keeps it a contraction), so within an epoch the network is driven to
    # zero and predicts one class (d_t 14.2 on every Digits model tried, perturbed or not), far below
    # half the baseline's d_t. It is pruned; the one trial drawn from the narrow, gentle space is the best.
    entries = [("baseline", 0, 0), ("retrain", None, None), ("finetune", 0.1, 3, {"weight_decay": 9.0})]
    space = {"finetune": (param("para1", 1e-3, 2e-3, log=True), param("para2", 2, 3, kind=int),
                          param("weight_decay", 1e-4, 1e-3, log=True))}
    assert tune(s, entries, seeds=[0], trials=2, jobs=1, threads=1, spaces=space, extra_pretrain=["--epochs", "8"],
                progress=False) == 0
    best = json.loads((study_folder(s, "finetune") / "best.json").read_text())
    assert best["default"]["pruned"].startswith("collapsed") and not best["best_is_default"]
    assert best["trials"] == {"finished": 2, "complete": 1, "pruned": 1, "failed": 0, "budget": 2}
    capsys.readouterr()

    d = dict(net=None, dataset="Digits", classes=None, forget_class=None, seeds=[0], weight_path=None,
             methods=entries, attack=None, stages=["forget"], python_file=None, jobs=1, replicates=1)
    argv = ["--log-root", str(root), "--no-progress", "--methods", "baseline", "finetune"]
    assert launch([*argv, "--dry-run"], d) == 0
    out = capsys.readouterr().out
    assert f"finetune: tuned (study {best['study_ref']}" in out and "baseline: config.py default" in out
    assert "-method finetune --opt" in out and "tuned_from" in out
    assert launch(argv, d) == 0
    p1, p2, opts = best["entry"][1:]
    run = s.stage_dir("unlearning", "finetune", p1, p2, {"options": {**opts, "tuned_from": best["study_ref"]}})
    res = json.loads((run / "results.json").read_text())
    assert res["status"] == "ok" and res["config"]["options"]["tuned_from"] == best["study_ref"]
    assert (res["para1"], res["para2"]) == (p1, p2)
    assert res["metrics"]["d_f"] == pytest.approx(best["metrics"]["d_f"], abs=5)  # threads differ: not bit-equal

    # another seed has no study: config.py's entry, the very same object, so the command does not change
    other = tuned_entries(setting(root, seed=1), [normal_entry(e) for e in entries])
    assert [note for _, note in other] == ["config.py default (not tuned)"] * 2 + ["config.py default"]
    # a study tuned on a checkpoint that has since changed is not used
    path = study_folder(s, "finetune") / "best.json"
    stale = {**best, "inputs": [{**best["inputs"][0], "size": best["inputs"][0]["size"] + 1}]}
    path.write_text(json.dumps(stale))
    try:
        (entry, note), = tuned_entries(s, [normal_entry(entries[2])])
        assert entry == normal_entry(entries[2]) and "another checkpoint" in note
    finally:
        path.write_text(json.dumps(best))


def test_a_best_setting_equal_to_the_default_leaves_the_command_alone(tmp_path):
    """Options and replay settings given at their default values are the default setting; a tuned setting
    passes only what differs from the defaults, and its study."""
    from unlearn.store.identity import fingerprint

    s = setting(tmp_path)
    ckpt = tmp_path / "checkpoint"
    ckpt.write_bytes(b"weights")
    for method, same, other, expected in [
        ("SalUn", ["SalUn", 0.013, 10, {"mask_ratio": 0.5}], ["SalUn", 0.02, 10, {"mask_ratio": 0.5}],
         ("SalUn", 0.02, 10, {})),
        ("SalUn_our", ["SalUn_our", 0.02, 10, {"replay_epochs": 3}], ["SalUn_our", 0.02, 10, {"replay_epochs": 5}],
         ("SalUn_our", 0.02, 10, {"replay_epochs": 5})),
    ]:
        folder = study_folder(s, method)
        folder.mkdir(parents=True)
        best = {"entry": same, "study_ref": f"tune/x#{method}-1", "inputs": [fingerprint(ckpt)]}
        (folder / "best.json").write_text(json.dumps(best))
        entry = normal_entry((method, None, None))
        (got, note), = tuned_entries(s, [entry])
        assert got is entry and "the best of study" in note
        (folder / "best.json").write_text(json.dumps({**best, "entry": other}))
        (got, note), = tuned_entries(s, [entry])
        assert got == (*expected[:3], {**expected[3], "tuned_from": f"tune/x#{method}-1"}) and note.startswith("tuned")


# ---------------------------------------------------------------- (e) scored over replicates


def test_worst_replicate_scores_a_setting():
    from unlearn.tune.evaluator import worst

    per = {0: {"d_f": 2.0, "d_t": 99.0, "forget_test": 0.0}, 3: {"d_f": 12.0, "d_t": 97.0, "forget_test": 1.0}}
    w = worst(per, {0: 100.0, 3: 97.5})
    assert (w["d_f"], w["d_t"], w["forget_test"]) == (12.0, 97.0, 1.0)
    assert w["d_t_drop"] == 1.0  # replicate 0 drops 1.0 below its own baseline, replicate 3 only 0.5
    assert w["replicates"] == {"0": per[0], "3": per[3]}


@pytest.mark.numerical
def test_tuning_runs_every_trial_on_every_replicate(tmp_path):
    from unlearn.tune.tasks import objective_value

    s = setting(tmp_path)
    entries = [("baseline", 0, 0), ("retrain", None, None), ("finetune", 0.05, 2)]
    space = {"finetune": (param("para1", 0.01, 0.1, log=True), param("para2", 1, 3, kind=int))}
    assert tune(s, entries, seeds=[0], trials=2, jobs=1, threads=1, spaces=space, extra_pretrain=["--epochs", "8"],
                progress=False, replicates=(0, 1)) == 0
    best = json.loads((study_folder(s, "finetune") / "best.json").read_text())
    assert best["replicates"] == [0, 1] and len(best["inputs"]) == 2
    assert best["inputs"][0]["sha256"] != best["inputs"][1]["sha256"]  # two pretrained models
    per = best["metrics"]["replicates"]
    assert sorted(per) == ["0", "1"]
    assert best["value"] == pytest.approx(max(objective_value(m, best["reference"], best["dt_weight"])
                                              for m in per.values()))
    assert best["metrics"]["d_f"] == max(m["d_f"] for m in per.values())
    assert best["metrics"]["d_t"] == min(m["d_t"] for m in per.values())
