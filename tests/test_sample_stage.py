"""The sample-wise forget stage (forget_sample_main.py): a run on Digits, its folder and metrics, and bad
input (a percent outside (0, 100), a method that needs a forget class) as one line, exit 2, nothing written."""
from dataclasses import replace
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
