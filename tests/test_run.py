"""run.py end to end on Digits: summary, resume, a killed run, a failing method."""
import csv
import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from unlearn.launcher import main as launch

METHODS = [("baseline", 0, 0), ("retrain", 0.01, 6), ("negative_grad", 0.01, 2), ("negative_grad_our", 0.01, 3)]
KILL_METHODS = METHODS[:2]
ATTACK = dict(trials=6, steps=30, relearning_lr=[0.05], retrain_refs=2)
REFS = ["retrain-0.01-6-seed1000", "retrain-0.01-6-seed1001"]


def defaults(methods=METHODS):
    return dict(net=None, dataset="Digits", classes=None, forget_class=None, seeds=[0], weight_path=None,
                methods=methods, attack=ATTACK, stages=["pretrain", "forget", "attack", "distribution"],
                python_file=None, jobs=1, replicates=1)  # one job: a stage's runs share a process (cheaper)


def argv(log_root):
    return ["--log-root", str(log_root), "--pretrain-epochs", "8", "--no-progress"]


def outputs(root):
    return {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in root.rglob("*")
            if p.is_file() and not p.name.startswith("summary")}


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("run")
    rc = launch(argv(root), {**defaults(), "jobs": 2})  # two at once, each run its own process
    return root, rc


def test_summary_has_a_finite_row_per_method(first_run):
    root, rc = first_run
    assert rc == 0
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [r["method"] for r in rows] == [m for m, _, _ in METHODS]
    for r in rows:
        for k in ("d_t", "d_f", "d_r", "mia", "zrf", "rea_auc_ood", "rea_auc2_out", "variance", "silhouette", "overlap",
                  "time"):
            assert math.isfinite(float(r[k])), (r["method"], k)
        (attack,) = (root / "forget_full_class_main").rglob(f"mia_mu_attack/{r['method']}-{r['para1']}-{r['para2']}-*")
        (per_lr,) = json.loads((attack / "results.json").read_text())["per_lr"].values()
        for short, level in (("out", "output"), ("feat", "feature")):
            lo, hi = per_lr[level]["index"]["null"]["band"]  # the guard: no index where the anchor is inside it
            if lo <= 1 <= hi:  # written out here, not through verdict.index_defined: the test checks it
                assert r[f"rea_index_{short}"] == "" and r[f"rea_index_{short}_undefined"] == "1", r["method"]
            else:
                assert math.isfinite(float(r[f"rea_index_{short}"])), (r["method"], short)
    assert (root / "summary.md").read_text().count("\n| ") >= len(METHODS)
    assert (root / "summary_comparison.png").is_file()
    run_dir = next((root / "forget_full_class_main").rglob("unlearning/negative_grad-0.01-2"))
    assert {"command.txt", "stdout.txt", "stderr.txt", "results.json"} <= {p.name for p in run_dir.iterdir()}


def test_second_invocation_recomputes_nothing(first_run):
    root, _ = first_run
    before = outputs(root)
    assert launch(argv(root), defaults()) == 0
    assert outputs(root) == before


def test_failing_method_leaves_others_complete(first_run, capsys):
    root, _ = first_run
    rc = launch(argv(root), defaults(METHODS + [("finetune", -1.0, 1)]))
    assert rc != 0
    out = capsys.readouterr().out
    assert "failed" in out and "finetune" in out
    rows = {r["method"]: r for r in csv.DictReader((root / "summary.csv").open())}
    assert all(math.isfinite(float(rows[m]["d_t"])) for m, _, _ in METHODS)


def test_one_job_shares_a_process_per_stage_and_isolates_failures(tmp_path):
    """--jobs 1 runs a stage's runs in one process; each still gets its files, a failure stays its own."""
    methods = METHODS[:2] + [("finetune", -1.0, 1)]
    d = {**defaults(methods), "jobs": 1, "stages": ["pretrain", "forget", "attack"]}
    assert launch(argv(tmp_path), d) == 1
    runs = sorted(p.parent.name for p in tmp_path.rglob("unlearning/*/command.txt"))
    assert runs == sorted(["baseline-0-0", "finetune--1-1", "retrain-0.01-6", *REFS])
    bad = next(tmp_path.rglob("unlearning/finetune--1-1"))
    assert "error:" in (bad / "stderr.txt").read_text() and not (bad / "results.json").exists()
    assert "forget_full_class_main_cifar20.py" in (bad / "command.txt").read_text()
    for m in ("baseline-0-0", "retrain-0.01-6"):
        for stage in ("unlearning", "mia_mu_attack"):
            run = next(tmp_path.rglob(f"{stage}/{m}" + ("-*" if stage == "mia_mu_attack" else "")))
            assert json.loads((run / "results.json").read_text())["status"] == "ok"
            assert "unlearn.pipeline.batch" not in (run / "command.txt").read_text()
    assert not list(tmp_path.rglob("mia_mu_attack/finetune*/results.json"))


def test_killed_run_is_redone(tmp_path):
    d = {**defaults(KILL_METHODS), "attack": {**ATTACK, "trials": 2, "steps": 5}}  # short: the kill is what is tested
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from unlearn.launcher import main; "
            f"sys.exit(main({argv(tmp_path)!r}, {d!r}))")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env, start_new_session=True,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not list(tmp_path.rglob("unlearning/*/results.json")):
        time.sleep(0.2)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert launch(argv(tmp_path), d) == 0
    results = list(tmp_path.rglob("results.json"))
    assert len(results) >= 1 + 3 * len(KILL_METHODS)
    for r in results:
        assert json.loads(r.read_text())["status"] == "ok"
    assert not list(tmp_path.rglob("*.tmp"))


def test_dry_run_prints_every_command_and_writes_nothing(tmp_path):
    cmd = [sys.executable, "run.py", "--dry-run", "--log-root", str(tmp_path / "logs"), "--methods", "baseline",
           "retrain"]
    p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    for script in ("pretrain_model_cifar20.py", "forget_full_class_main_cifar20.py",
                   "mia_on_mu_main_cifar20_fullclass.py", "run-distribution-metric.py"):
        assert any(script in line for line in lines), script
    assert not (tmp_path / "logs").exists()
    # a reader that stops early (run.py --dry-run | head -1) ends it quietly; 20 seeds overflow the pipe
    cmd = [*cmd[:5], "--seeds", *map(str, range(20))]
    p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1)
    p.stdout.readline()
    p.stdout.close()
    assert p.wait() == 0 and "Traceback" not in p.stderr.read()


def test_an_int_where_a_float_is_declared_names_the_same_folder(digits):
    """run.py's literal values and what the stages' parsers give are normalised alike before hashing."""
    from unlearn.methods.entries import entry_settings
    from unlearn.methods.cli import extras_from_args, parser
    from unlearn.store.identity import attack_extras

    assert attack_extras("Digits", {"unlearn_data_percent": 20}) == attack_extras("Digits", {"unlearn_data_percent": 20.0})
    assert attack_extras("Digits", {"relearning_lr": (1,)}) == attack_extras("Digits", {"relearning_lr": [1.0]})
    for entry_opts, flags in [({"replay_lr": 1}, ["--replay_lr", "1"]), ({"replay_lr": 1.0}, ["--replay_lr", "1.0"]),
                              ({"weight_decay": 1}, ["--opt", "weight_decay=1"])]:
        method = "finetune_our"
        _, _, launcher = entry_settings(method, entry_opts)
        _, stage = extras_from_args(parser("Digits").parse_args(["--dataset", "Digits", "-method", method, *flags]))
        assert digits.run_name(method, 0.1, 2, launcher) == digits.run_name(method, 0.1, 2, stage), entry_opts
    one = entry_settings("finetune_our", {"replay_lr": 1})[2]
    assert digits.run_name("finetune_our", 0.1, 2, one) == \
        digits.run_name("finetune_our", 0.1, 2, entry_settings("finetune_our", {"replay_lr": 1.0})[2])


def test_run_py_with_an_int_attack_setting_and_an_int_replay_setting_finishes(first_run):
    """The run.py edits a user makes (``unlearn_data_percent=20``, ``replay_l1=0``) find their own results
    (they used to run, then be reported as "exited 0 but left no fresh results.json": exit 1)."""
    root, _ = first_run
    methods = [("baseline", 0, 0), ("retrain", 0.01, 6), ("negative_grad_our", 0.01, 3, {"replay_l1": 0})]
    d = {**defaults(methods), "attack": {**ATTACK, "unlearn_data_percent": 20, "trials": 2, "steps": 5},
         "stages": ["pretrain", "forget", "attack"]}
    assert launch(argv(root), d) == 0
    rows = list(csv.DictReader((root / "summary.csv").open()))
    assert [r["method"] for r in rows] == [m[0] for m in methods]
    assert all(math.isfinite(float(r["rea_index_out"])) for r in rows if r["method"] != "baseline")


def test_replicates_are_pretrained_models_with_their_own_runs_and_shared_references(tmp_path):
    """--replicates 2: two pretrained models (pretraining seeds 0 and 1), every method run on each, one
    reference population for both; the verdict counts models, not runs."""
    methods = [("baseline", 0, 0), ("retrain", 0.01, 2)]
    d = {**defaults(methods), "attack": {**ATTACK, "trials": 2, "steps": 5}, "stages": ["pretrain", "forget", "attack"],
         "replicates": None, "jobs": 1}
    assert launch(["--log-root", str(tmp_path), "--pretrain-epochs", "1", "--no-progress", "--replicates", "2"], d) == 0
    pre = {p.parent.name for p in (tmp_path / "model" / "pretrain").glob("*/best.pth")}
    assert pre == {"SmallCNN-Digits-10", "SmallCNN-Digits-10-seed1"}
    runs = {p.parent.name for p in tmp_path.rglob("unlearning/*/results.json")}
    assert runs == {"baseline-0-0", "baseline-0-0-pre1", "retrain-0.01-2", "retrain-0.01-2-pre1", *REFS_2}
    a0, a1 = (json.loads((next(tmp_path.glob(f"forget_full_class_main/*/mia_mu_attack/baseline-0-0{x}-[0-9a-f]*")) / "results.json").read_text())
              for x in ("", "-pre1"))
    assert a0["references"] == a1["references"] and a0["anchor"] != a1["anchor"]  # shared refs, own anchors
    r0, r1 = (json.loads((next(tmp_path.glob(f"forget_full_class_main/*/unlearning/retrain-0.01-2{x}")) / "results.json").read_text())
              for x in ("", "-pre1"))
    assert r0["metrics"] != r1["metrics"]  # retrain under another replicate is another model
    rows = {r["method"]: r for r in csv.DictReader((tmp_path / "summary.csv").open())}
    assert rows["baseline"]["replicates"] == "2" and rows["baseline"]["seeds"] == "2"
    assert "2/2 models" in (tmp_path / "summary.md").read_text()


REFS_2 = ["retrain-0.01-2-seed1000", "retrain-0.01-2-seed1001"]


def test_replicates_with_a_given_checkpoint_or_two_pretraining_seeds_are_one_line_errors(tmp_path):
    from unlearn.core.errors import UsageError

    with pytest.raises(UsageError, match="one replicate"):
        launch(["--log-root", str(tmp_path), "--replicates", "2", "--dry-run", "-weight_path", str(tmp_path / "m.pth")],
               defaults())
    r = subprocess.run([sys.executable, "pretrain_model_cifar20.py", "--dataset", "Digits", "-seed", "1",
                        "--pretrain_seed", "2", "--log-root", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "give one of them" in r.stderr
    assert not any(tmp_path.rglob("*.json"))
