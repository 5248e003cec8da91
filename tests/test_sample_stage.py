"""The sample-wise forget stage (forget_sample_main.py): a run on Digits, its folder and metrics, and bad
input (a percent outside (0, 100), a method that needs a forget class) as one line, exit 2, nothing written."""
from dataclasses import replace

import numpy as np
from pathlib import Path

import pytest

from conftest import run_inprocess
from unlearn.core.errors import UsageError
from unlearn.methods.cli import sample_methods
from unlearn.stages.forget import unlearn_run


def flags(s):
    return ["--dataset", "Digits", "--log-root", s.log_root, "--data-root", s.data_root, "--no-progress",
            "--threads", "1"]


def test_a_sample_wise_run_forgets_its_samples_in_its_own_folder(digits, pretrained):
    r = run_inprocess("forget_sample_main.py", *flags(digits), "-method", "finetune", "--para1", "0.1", "--para2", "2")
    assert r.returncode == 0, r.stderr
    s = replace(digits, forget_percent=10.0)
    folder = s.stage_dir("unlearning", "finetune", 0.1, 2)
    assert "forget_sample_main" in folder.parts and folder.parent.parent.name == "SmallCNN-Digits-10-forget10pct"
    assert (folder / "model.pth").is_file() and "forget_test" not in r.stdout
    import json
    res = json.loads((folder / "results.json").read_text())
    assert res["config"]["forget_percent"] == 10.0 and "forget_test" not in res["metrics"]
    data = s.load_data("cpu")
    assert len(data.forget_train) == int(len(data.in_train) * 0.1)


@pytest.mark.parametrize("extra", [["--forget_percent", "0"], ["--forget_percent", "100"], ["--forget_percent", "-3"],
                                   ["-method", "UNSIR"]])
def test_bad_sample_wise_input_is_one_line_exit_2_and_writes_nothing(tmp_path, extra):
    root = tmp_path / "logs"
    args = ["--dataset", "Digits", "--log-root", root, "--data-root", tmp_path / "data", "--no-progress"]
    method = [] if "-method" in extra else ["-method", "finetune"]
    r = run_inprocess("forget_sample_main.py", *args, *method, *extra)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not root.exists() or not any(Path(root).rglob("*.json"))


def test_class_only_methods_are_refused_sample_wise_with_the_reason(digits):
    s = replace(digits, forget_percent=10.0)
    with pytest.raises(UsageError, match="zeroes the forget class") as e:
        unlearn_run(s, method="FisherForgetting", device="cpu", progress=False)
    assert "finetune" in str(e.value) and "UNSIR" not in str(e.value).split("pick one of:")[1]
    assert "UNSIR" not in sample_methods() and "UNSIR_our" not in sample_methods() and "SalUn_our" in sample_methods()


SMALL = ["--shadows", "3", "--shadow_in", "1", "--shadow_epochs", "3", "--members", "40", "--non_members", "40",
         "--rea_epochs", "1", "1"]


def test_the_sample_wise_attack_writes_both_levels_scores_and_plots(digits, pretrained):
    import json

    assert run_inprocess("forget_sample_main.py", *flags(digits), "-method", "finetune", "--para1", "0.1",
                         "--para2", "2").returncode == 0
    r = run_inprocess("mia_on_mu_main_sample.py", *flags(digits), "-method", "finetune", "--para1", "0.1",
                      "--para2", "2", *SMALL)
    assert r.returncode == 0, r.stderr
    s = replace(digits, forget_percent=10.0)
    out = s.stage_dir("mia_sample_attack", "finetune", 0.1, 2)
    res = json.loads((out / "results.json").read_text())
    for level in ("plain", "rea"):
        for kind in ("online", "offline"):
            got = res["levels"][level][kind]
            assert 0 <= got["auc"] <= 1 and got["members"] == 40 and got["non_members"] == 40
    assert "forget_test" not in res["rea_model_metrics"]
    with np.load(out / "scores.npz") as z:
        assert z["member"].sum() == 40 and z["plain_online"].shape == (80,) and np.isfinite(z["rea_offline"]).all()
    assert all((out / f"{stem}.{ext}").is_file() for stem in ("roc", "scores") for ext in ("png", "pdf"))


@pytest.mark.parametrize("extra,what", [(["-method", "SalUn"], "no unlearned model"),
                                        (["-method", "finetune", "--shadows", "4", "--shadow_in", "4"], "shadows"),
                                        (["-method", "finetune", "--rea_lrs", "0.1", "--rea_epochs", "1", "1"],
                                         "one epoch count per lr")])
def test_bad_sample_attack_input_is_one_line_exit_2_and_writes_nothing(tmp_path, extra, what):
    root = tmp_path / "logs"
    args = ["--dataset", "Digits", "--log-root", root, "--data-root", tmp_path / "data", "--no-progress"]
    r = run_inprocess("mia_on_mu_main_sample.py", *args, *extra)
    assert r.returncode == 2 and what in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not root.exists() or not any(Path(root).rglob("*.json"))
