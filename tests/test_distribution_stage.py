"""run-distribution-metric.py on Digits: JSON, plots, coordinates; bad input."""
import json

import numpy as np
import pytest

from conftest import run_script
from unlearn.stages.forget import unlearn_run


@pytest.mark.numerical  # an outcome of the pretrained model: CI runs it perturbed too
def test_distribution_script_on_digits(digits, pretrained):
    unlearn_run(digits, method="baseline", device="cpu", progress=False)
    r = run_script("run-distribution-metric.py", "--dataset", "Digits", "--runs", "baseline:0:0", "--log-root",
                   digits.log_root, "--threads", "1")
    assert r.returncode == 0, r.stderr
    out = digits.stage_dir("visualization", "baseline", 0, 0)
    res = json.loads((out / "results.json").read_text())
    for space in ("tsne", "features"):
        assert set(res["metrics"][space]) >= {"intra_class_variance", "silhouette", "overlap"}
        assert all(np.isfinite(v) for v in res["metrics"][space].values())
    for stem in ("tsne", "kde_overlap"):
        assert (out / f"{stem}.png").stat().st_size > 0 and (out / f"{stem}.pdf").stat().st_size > 0
    pts = np.load(out / "tsne_points.npy")
    assert pts.shape == (res["points"], 3)
    # the pretrained model keeps the forget class as a tight, separate cluster
    assert res["metrics"]["tsne"]["silhouette"] > 0.3 and res["metrics"]["tsne"]["overlap"] < 0.2


def test_missing_model_is_one_line_error(tmp_path, digits, pretrained):
    r = run_script("run-distribution-metric.py", "--dataset", "Digits", "--runs", "SCRUB:0.1:2", "--log-root",
                   tmp_path)
    assert r.returncode == 2
    assert "\n" not in r.stderr.strip() and "forget_full_class_main" in r.stderr and "-method SCRUB" in r.stderr
    assert not any(tmp_path.iterdir())
