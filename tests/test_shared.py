"""Helpers written once and shared by several stages (issue 20): each checked where it lives."""
import json
import math
import os

import pytest

from unlearn.core.errors import UsageError
from unlearn.evaluation.rea.reference import retrain_command
from unlearn.methods import resolve_paras
from unlearn.methods.entries import entry_for, normalise_entry
from unlearn.pipeline.summary import time_pct
from unlearn.stages.distribution import missing_model_message
from unlearn.store.runs import finished_retrain_runs, missing_unlearned_model, newest_retrain_model
from unlearn.store.setting import Setting


def setting(root, seed=0, forget_class=4) -> Setting:
    return Setting(net="SmallCNN", dataset="Digits", classes=10, forget_class=forget_class, ood_classes=[8, 9],
                   data_root=str(root / "data"), log_root=str(root), seed=seed)


def fake_retrain(s: Setting, name: str, mtime: int, *, model=True, status="ok", forget_class=None):
    folder = s.stage_root("unlearning") / name
    folder.mkdir(parents=True)
    config = {"seed": s.seed, "forget_class": s.forget_class if forget_class is None else forget_class,
              "ood_classes": s.ood_classes}
    (folder / "results.json").write_text(json.dumps({"status": status, "time": 1.0, "config": config}))
    if model:
        (folder / "model.pth").write_bytes(b"weights")
    os.utime(folder / "results.json", (mtime, mtime))
    return folder


def test_stage_root_is_where_run_folders_live(tmp_path):
    s = setting(tmp_path, seed=3)
    assert s.stage_root("unlearning") == tmp_path / "forget_full_class_main" / "SmallCNN-Digits-10" / "unlearning"
    assert s.stage_dir("unlearning", "SalUn", 0.01, 3).parent == s.stage_root("unlearning")


def test_newest_retrain_model_is_the_newest_finished_run_with_a_model(tmp_path):
    s = setting(tmp_path)
    assert newest_retrain_model(s) is None
    old = fake_retrain(s, "retrain-0-0-a", 1_000_000)
    new = fake_retrain(s, "retrain-0-0-b", 3_000_000)
    fake_retrain(s, "retrain-0-0-c", 5_000_000, model=False)  # newest, but its model is gone
    fake_retrain(s, "retrain-0-0-d", 6_000_000, status="diverged")  # newest, but did not finish ok
    fake_retrain(s, "retrain-0-0-e", 7_000_000, forget_class=2)  # another class split
    fake_retrain(setting(tmp_path, seed=1), "retrain-0-0-seed1", 8_000_000)  # another seed
    assert [f.name for f, _ in finished_retrain_runs(s)] == ["retrain-0-0-c", "retrain-0-0-b", "retrain-0-0-a"]
    assert newest_retrain_model(s) == new / "model.pth"
    (new / "model.pth").unlink()
    assert newest_retrain_model(s) == old / "model.pth"


def test_how_to_make_a_missing_run_is_one_command(tmp_path):
    s, s0 = setting(tmp_path, seed=2), setting(tmp_path)
    cmd = "python forget_full_class_main_cifar20.py --dataset Digits -net SmallCNN -method SalUn --para1 0.01 --para2 3"
    assert s0.forget_command("-method SalUn --para1 0.01 --para2 3") == cmd
    assert s.forget_command("-method SalUn --para1 0.01 --para2 3") == cmd + " -seed 2"
    assert missing_unlearned_model(s, "m.pth", "-method SalUn --para1 0.01 --para2 3") == \
        f"no unlearned model at m.pth; run: {cmd} -seed 2"
    # the distribution stage reads the method and its parameters off the run's folder name
    assert missing_model_message(s, "SalUn-0.01-3-seed2-1a2b3c4d", "m.pth") == \
        f"no unlearned model at m.pth; run: {cmd} -seed 2"
    assert retrain_command(s, [1000, 1001]).endswith("-method retrain -seed S for S in 1000 1001")


def test_time_pct_is_against_the_retrain_run_of_the_same_seed(tmp_path):
    s = setting(tmp_path, seed=1)
    retrain = ("retrain", 0, 0, {})
    assert math.isnan(time_pct(s, 3.0, retrain))  # no retrain run yet
    folder = s.stage_dir("unlearning", "retrain", 0, 0)
    folder.mkdir(parents=True)
    (folder / "results.json").write_text(json.dumps({"status": "ok", "time": 12.0}))
    assert time_pct(s, 3.0, retrain) == 25.0
    assert math.isnan(time_pct(setting(tmp_path, seed=2), 3.0, retrain))


def test_one_normalisation_of_a_method_list_entry():
    assert normalise_entry(("SalUn", None, None)) == ("SalUn", *resolve_paras("SalUn"), {})
    assert normalise_entry(["SalUn", 0.02, 3, None]) == ("SalUn", 0.02, 3, {})  # best.json's lists, no options
    assert normalise_entry(("SalUn", 0.02, 3, {"mask_ratio": 0.4})) == ("SalUn", 0.02, 3, {"mask_ratio": 0.4})
    with pytest.raises(UsageError):
        normalise_entry(("SalUn", 0.02))
    listed = [("baseline", 0, 0), ("retrain", 0.1, 7, {})]
    assert entry_for("retrain", listed) == ("retrain", 0.1, 7, {})
    assert entry_for("SalUn", listed) == normalise_entry(("SalUn", None, None))  # not listed: its defaults
