"""Helpers written once and shared by several stages (issue 20): each checked where it lives."""
import json
import os

from unlearn.store.runs import finished_retrain_runs, newest_retrain_model
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
