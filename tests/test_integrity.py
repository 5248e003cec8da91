"""Run integrity: run identity, invalidate-first reruns, --force, validation, GPU pinning, python_file, forget class."""
import json
import os
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_inprocess, run_script
from unlearn.pipeline import runner
from unlearn.store.checkpoint import atomic_write_bytes, atomic_write_text
from unlearn.launcher import main as launch
from unlearn.launcher import normalise_entry, stages_for
from unlearn.core.errors import UsageError

FORGET = "forget_full_class_main_cifar20.py"
PRETRAIN = "pretrain_model_cifar20.py"


def common(setting):
    return ["--dataset", "Digits", "--log-root", setting.log_root, "--data-root", setting.data_root, "--no-progress"]


def defaults(**kw):
    d = dict(net=None, dataset="Digits", classes=None, forget_class=None, seeds=[0], weight_path=None,
             methods=[("baseline", 0, 0), ("retrain", 0.01, 2)], attack=dict(trials=4, steps=10), stages=["forget"],
             python_file=None, jobs=1, replicates=1)
    d.update(kw)
    return d


# 1. --force with a failing rerun must report the failure, not the old numbers
def test_force_reports_failures_in_shared_process_mode(digits, pretrained, tmp_path, capsys):
    argv = ["--log-root", digits.log_root, "--data-root", digits.data_root, "--no-progress"]
    assert launch(argv, defaults()) == 0
    rc = launch([*argv, "--force", "--weight_path", str(tmp_path / "nonexistent.pth")], defaults())
    out = capsys.readouterr().out
    assert rc == 1 and "2 run(s) failed" in out and "not found" in out
    unlearning = Path(digits.log_root) / "forget_full_class_main" / digits.tag / "unlearning"
    for m in ("baseline-0-0", "retrain-0.01-2"):  # runs from another checkpoint live in their own folders
        assert (unlearning / m / "results.json").is_file()
        assert not list(unlearning.glob(f"{m}-*/results.json"))


# 2. a rerun that fails after it started writing leaves the folder incomplete
def test_failed_rerun_over_finished_folder_invalidates_it(digits, pretrained, monkeypatch):
    from unlearn.stages import forget

    res = forget.unlearn_run(digits, method="finetune_our", para1=0.05, para2=1, device="cpu", progress=False)
    folder = digits.stage_dir("unlearning", "finetune_our", 0.05, 1)
    assert res["status"] == "ok" and (folder / "results.json").is_file()
    real, calls = forget.evaluate_unlearning, []

    def boom(*a, **k):  # the mid point is evaluated and saved; the final evaluation fails
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("injected failure after replay")
        return real(*a, **k)

    monkeypatch.setattr(forget, "evaluate_unlearning", boom)
    with pytest.raises(RuntimeError):
        forget.unlearn_run(digits, method="finetune_our", para1=0.05, para2=1, device="cpu", progress=False)
    assert (folder / "mid.pth").is_file() and not (folder / "results.json").exists()


# 3. folder names carry options, replay and attack settings
def test_folder_names_carry_every_non_default_setting(digits):
    from unlearn.methods.entries import forget_extras

    names = {digits.run_name("finetune", 0.1, 2, forget_extras(options=o)) for o in
             ({}, {"weight_decay": 0.01}, {"weight_decay": 0.02})}
    assert len(names) == 3 and "finetune-0.1-2" in names
    r1 = digits.run_name("finetune_our", 0.1, 2, forget_extras(replay_extras={"replay_epochs": 1}))
    assert r1.startswith("finetune_our-0.1-2-") and r1 != digits.run_name("finetune_our", 0.1, 2)
    jobs = lambda attack: [j for j in runner.build_jobs(  # noqa: E731
        digits, methods=[normalise_entry(("baseline", 0, 0))], seeds=[0], stages=["attack"], attack=attack)]
    a, b = jobs({"trials": 4})[0], jobs({"trials": 8})[0]
    assert a.folder != b.folder
    assert jobs({})[0].folder.name == "baseline-0-0"


def test_forget_runs_with_different_options_do_not_overwrite(digits, pretrained):
    for wd in ("0.01", "0.02"):
        p = run_script(FORGET, *common(digits), "-method", "finetune", "--para1", "0.01", "--para2", "1",
                       "--opt", f"weight_decay={wd}")
        assert p.returncode == 0, p.stderr
    folders = list((Path(digits.log_root) / "forget_full_class_main" / digits.tag / "unlearning").glob(
        "finetune-0.01-1-*"))
    assert len(folders) == 2
    wds = sorted(json.loads((f / "results.json").read_text())["config"]["options"]["weight_decay"] for f in folders)
    assert wds == [0.01, 0.02]


# 4. --force recomputes the distribution stage too
def test_force_reruns_the_distribution_stage(digits):
    entry = [normalise_entry(("baseline", 0, 0))]
    kw = dict(methods=entry, seeds=[0], stages=["distribution"], attack={})
    dist = lambda force: next(j for j in runner.build_jobs(digits, force=force, **kw))  # noqa: E731
    assert "--skip-done" in dist(False).cmd and "--skip-done" not in dist(True).cmd


# 5. numbers are validated up front: one line, exit 2, nothing written
@pytest.mark.parametrize("script,args", [
    (PRETRAIN, ["--epochs", "-1"]),
    (PRETRAIN, ["--epochs", "0"]),
    (PRETRAIN, ["-lr", "0"]),
    (PRETRAIN, ["--l1", "-1e-4"]),
    (FORGET, ["-method", "finetune_our", "--replay_lr", "-1"]),
    (FORGET, ["-method", "finetune_our", "--replay_lr", "0"]),
    (FORGET, ["-method", "finetune_our", "--replay_epochs", "-2"]),
    (FORGET, ["-method", "finetune", "-seed", "-3"]),
    (FORGET, ["-method", "finetune", "-b", "0"]),
    (FORGET, ["-method", "finetune", "--para1", "nan"]),
    ("run-distribution-metric.py", ["--max-points", "0"]),
])
def test_bad_numbers_are_one_line_errors(tmp_path, script, args):
    p = run_inprocess(script, "--dataset", "Digits", "--log-root", tmp_path / "logs", "--data-root", tmp_path / "d",
                      *args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert len(p.stderr.strip().splitlines()) == 1 and p.stderr.startswith("error:"), p.stderr
    assert not (tmp_path / "logs").exists()


def test_replay_epochs_zero_is_honoured(digits, pretrained):
    from unlearn.stages import forget

    replay, extras = forget.replay_config(forget.get_method("finetune")[0], epochs=0)
    assert replay.epochs == 0 and extras == {"replay_epochs": 0}
    res = forget.unlearn_run(digits, method="finetune_our", para1=0.05, para2=1, device="cpu", progress=False,
                             replay=replay, extras=forget.forget_extras(replay_extras=extras))
    assert res["config"]["replay"]["epochs"] == 0
    assert res["phases"]["replay_seconds"] < res["phases"]["over_seconds"] + 1.0


# 6. GPU pinning maps through a preset CUDA_VISIBLE_DEVICES
def test_gpu_slots_map_through_preset_visible_devices(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert runner.visible_gpus() == ["2", "3"]
    assert runner.job_env("3")["CUDA_VISIBLE_DEVICES"] == "3"
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert runner.visible_gpus() == ["0", "1"]


def test_jobs_are_pinned_to_the_preset_gpus(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    seen = []

    def fake_execute(unit, gpu, threads):
        seen.append(gpu)
        return [(j.name, 0, "ok") for j in unit]

    monkeypatch.setattr(runner, "_execute", fake_execute)
    jobs = [runner.Job(f"j{i}", ["python", "x.py"], tmp_path / f"j{i}", [tmp_path / f"j{i}" / "results.json"])
            for i in range(4)]
    runner.run_jobs(jobs, n_jobs=2, progress=False)
    assert sorted(set(seen)) == ["2", "3"]


# 7. python_file naming another dataset is refused
def test_python_file_of_another_dataset_is_refused():
    assert stages_for("forget_full_class_main_cifar20.py", [], "Digits") == ["forget"]
    assert stages_for("mia_on_mu_main_cifar100_fullclass.py", [], "Cifar100") == ["attack"]
    with pytest.raises(UsageError, match="Cifar100|cifar100"):
        stages_for("forget_full_class_main_cifar100.py", [], "Digits")
    with pytest.raises(UsageError):
        stages_for("forget_full_class_main_cifar20.py", [], "Imagenet64")


def test_run_py_refuses_python_file_of_another_dataset(tmp_path):
    p = subprocess_run(["run.py", "--dry-run", "--log-root", str(tmp_path / "l"), "--python_file",
                        "forget_full_class_main_cifar100.py"])
    assert p.returncode == 2 and p.stderr.startswith("error:") and len(p.stderr.strip().splitlines()) == 1


def subprocess_run(args):
    import subprocess

    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})


# 8. run.py --forget_class 3 forgets class 3 in every stage
def test_run_py_forget_class_reaches_every_stage(tmp_path):
    argv = ["--log-root", str(tmp_path), "--pretrain-epochs", "3", "--no-progress", "--forget_class", "3",
            "--retrain_refs", "2"]
    d = defaults(methods=[("baseline", 0, 0), ("retrain", 0.01, 2), ("finetune", 0.05, 1)],
                 stages=["pretrain", "forget", "attack", "distribution"], jobs=1)
    assert launch(argv, d) == 0
    results = [p for p in tmp_path.rglob("results.json") if "pretrain" not in p.parts]
    assert len(results) >= 9
    for r in results:
        cfg = json.loads(r.read_text())["config"]
        assert cfg["forget_class"] == 3, r
    for r in tmp_path.rglob("command.txt"):
        if "pretrain" not in r.parts:
            assert "--forget_class 3" in r.read_text(), r
    rows = (tmp_path / "summary.csv").read_text()
    assert "nan" not in rows.split("\n")[1].lower()


# Killed between the model and results.json: the run is redone, not skipped
def test_run_killed_before_results_is_redone(digits, pretrained, monkeypatch):
    from unlearn.stages import forget

    entry = normalise_entry(("finetune", 0.02, 1))
    job = next(j for j in runner.build_jobs(digits, methods=[entry], seeds=[0], stages=["forget"], attack={}))
    job.folder.mkdir(parents=True, exist_ok=True)
    real = forget.atomic_write_json

    def die_on_results(path, obj):
        if Path(path).name == "results.json":
            raise KeyboardInterrupt("killed")
        real(path, obj)

    monkeypatch.setattr(forget, "atomic_write_json", die_on_results)
    with pytest.raises(KeyboardInterrupt):
        forget.unlearn_run(digits, method="finetune", para1=0.02, para2=1, device="cpu", progress=False,
                           argv=job.cmd[2:])
    assert (job.folder / "model.pth").is_file() and not (job.folder / "results.json").exists()
    assert runner.pending_jobs([job], force=False) == [job]
    monkeypatch.setattr(forget, "atomic_write_json", real)
    status = runner.run_jobs([job], n_jobs=1, progress=False)
    assert status[job.name][0] == 0 and runner.pending_jobs([job], force=False) == []


def test_stale_identity_is_rerun(digits, pretrained):
    """A finished run made by another command, or from a changed input file, is not reused."""
    entry = normalise_entry(("baseline", 0, 0))
    job = next(j for j in runner.build_jobs(digits, methods=[entry], seeds=[0], stages=["forget"], attack={}))
    runner.run_jobs([job], n_jobs=1, progress=False)
    assert runner.pending_jobs([job], force=False) == []
    other = runner.Job(job.name, [*job.cmd, "-b", "16"], job.folder, job.done, dataset=job.dataset)
    assert runner.pending_jobs([other], force=False) == [other]
    res = json.loads(job.done[0].read_text())
    res["identity"]["inputs"][0]["sha256"] = "0" * 64
    res["identity"]["inputs"][0]["mtime_ns"] = -1
    atomic_write_text(job.done[0], json.dumps(res))
    assert runner.pending_jobs([job], force=False) == [job]


def test_sigterm_to_the_launcher_stops_its_stage_processes(tmp_path):
    """``kill`` of run.py (SIGTERM to it alone) must not leave its stage processes running as orphans."""
    import signal
    import subprocess
    import time

    pidfile = tmp_path / "child.pid"
    child = f"import os, time; open({str(pidfile)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    driver = tmp_path / "driver.py"
    driver.write_text(
        "import sys\n"
        "from pathlib import Path\n"
        "from unlearn.pipeline import runner\n"
        f"job = runner.Job('sleeper', [sys.executable, '-c', {child!r}], Path({str(tmp_path / 'run')!r}),\n"
        f"                 [Path({str(tmp_path / 'run' / 'results.json')!r})])\n"
        "runner.run_jobs([job], n_jobs=1, progress=False)\n")
    p = subprocess.Popen([sys.executable, str(driver)], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.monotonic() + 120
    while not (pidfile.is_file() and pidfile.read_text()) and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.1)
    assert pidfile.is_file(), "the stage process never started"
    pid = int(pidfile.read_text())
    p.send_signal(signal.SIGTERM)
    rc = p.wait(timeout=30)
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        pytest.fail("the stage process outlived the launcher")
    assert rc == 128 + signal.SIGTERM
    assert not (tmp_path / "run" / "results.json").exists()


def test_interrupted_atomic_write_keeps_the_old_file(tmp_path):
    from unlearn.store import checkpoint

    target = tmp_path / "results.json"
    atomic_write_bytes(target, b"old")

    def half(f):
        f.write(b"new but incomp")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        checkpoint._atomic(target, half)
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["results.json"]
