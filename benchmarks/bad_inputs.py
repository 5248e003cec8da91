"""Try bad inputs on every stage: each must exit 2 with one line on stderr and write nothing.

    python benchmarks/bad_inputs.py            # prints a Markdown table: input, exit code, first line

Needs a pretrained Digits model in a scratch log folder (made first, ~10 s), so that
errors past the checkpoint check (mismatched model, options, classes) are reached.
"""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
P, F, A, D = ("pretrain_model_cifar20.py", "forget_full_class_main_cifar20.py", "mia_on_mu_main_cifar20_fullclass.py",
              "run-distribution-metric.py")
CASES = [
    (P, "--epochs -1"), (P, "--epochs 0"), (P, "-lr 0"), (P, "-lr -0.1"), (P, "--l1 -1"), (P, "--dataset MNISTX"),
    (P, "-net Foo"), (P, "-classes 11"), (P, "-seed -3"), (P, "-b 0"), (P, "--threads 0"), (P, "--ood_classes 12"),
    (P, "--epochs abc"),
    (F, "-method nope"), (F, "-method finetune --forget_class 8"), (F, "-method finetune --forget_class 10"),
    (F, "-method finetune --para1 nan"), (F, "-method finetune --para1 -0.1"), (F, "-method finetune --para2 1.5"),
    (F, "-method finetune_our --replay_lr -1"), (F, "-method finetune_our --replay_lr 0"),
    (F, "-method finetune_our --replay_epochs -2"), (F, "-method finetune --opt aplha=0.9"),
    (F, "-method finetune --opt novalue"), (F, "-method finetune -weight_path /nonexistent.pth"),
    (F, "-method SalUn --mask_path missing.pt"), (F, "-method finetune -net ResNet18"),
    (F, "-method finetune -net ResNet18 -weight_path {logs}/model/pretrain/SmallCNN-Digits-10/best.pth"),
    (F, "-method finetune --ood_classes 4 9"),
    (A, "-method finetune --relearning_lr -0.01"), (A, "-method finetune --trials 1"),
    (A, "-method finetune --unlearn_data_percent 0"), (A, "-method finetune --num_ood_dataset 5"),
    (A, "-method finetune --para1 0.123"), (A, "-method finetune --steps 0"),
    (D, "--max-points 0"), (D, "--runs bad"), (D, "--runs nope:1:2"), (D, "--runs finetune:0.5:9"),
    ("run.py", "--methods nope"), ("run.py", "--python_file forget_full_class_main_cifar100.py"),
    ("run.py", "--jobs 0"), ("run.py", "--seeds -1"), ("run.py", "--dataset Foo"), ("run.py", "--stages foo"),
]


def files(root: Path) -> set:
    return {p for p in root.rglob("*") if p.is_file()}


def main() -> int:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with tempfile.TemporaryDirectory() as tmp:
        logs = Path(tmp) / "logs"
        common = ["--dataset", "Digits", "--log-root", str(logs), "--no-progress"]
        subprocess.run([sys.executable, P, *common, "--epochs", "3"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        print("| stage | input | exit | stderr lines | wrote | first line |\n|---|---|---|---|---|---|")
        bad = 0
        for script, args in CASES:
            before = files(logs)
            extra = ["--log-root", str(logs), "--dry-run"] if script == "run.py" else common
            argv = args.replace("{logs}", str(logs)).split()
            p = subprocess.run([sys.executable, script, *extra, *argv], cwd=ROOT, env=env,
                               capture_output=True, text=True)
            lines = p.stderr.strip().splitlines()
            wrote = len(files(logs) - before)
            ok = p.returncode == 2 and len(lines) == 1 and wrote == 0
            bad += not ok
            first = (lines[0] if lines else p.stdout.strip()[:80]).replace("|", "/").replace(tmp, "<tmp>")
            print(f"| {script} | `{args}` | {p.returncode} | {len(lines)} | {wrote} | {first[:160]} |")
        print(f"\n{len(CASES) - bad} of {len(CASES)} bad inputs give exit 2, one line and no files")
        return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
