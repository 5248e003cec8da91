"""Every entry of config.MU_METHOD_LIST on several pretrained models: is it on target on all of them?

The tuned settings must hold on a pretrained model nobody tuned on: another pretraining seed, or another
CPU, whose rounding gives another model (stood in for by ``UNLEARN_FP_PERTURB``,
:func:`unlearn.core.engine.perturb_init`). For each model ``seed:level`` (pretraining seed, perturbation level)
(and ``seed:level:threads``, the torch threads of its pretraining, 1 by default as the tests; run.py
pretrains with all cores) this pretrains the dataset's default model (and the L1-sparse ones some ``_our`` methods start from),
runs every entry of the list with unlearning seed 0, and records d_f and d_t. The report gives, per
entry, the worst d_f and d_t over the models, the worst margin to the target (d_f <= 10, d_t within 10 of
that model's baseline) and whether ``config.OFF_TARGET`` lists it.

    python benchmarks/check_defaults.py --dataset Digits --models 0:0 1:0 2:0 0:1 0:2 0:0:2 --jobs 2 --out /tmp/chk

Writes ``<out>/<dataset>.json`` (every number) and ``<out>/<dataset>.md`` (the table), and prints the table.
Finished pretrainings and runs in ``--out`` are reused (a killed check resumes; the folder is a scratch
folder of this script, for this config.py).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import config  # noqa: E402

TARGET_DF, TARGET_DT_DROP = 10.0, 10.0


def done(path: Path) -> dict | None:
    """A finished run's results (status ok) in the scratch folder, so that a killed check resumes; else None."""
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return r if r.get("status") == "ok" else None


def one_model(dataset: str, seed: int, level: int, threads: int, root: str) -> dict:
    """Pretrain model ``seed:level:threads`` under ``root`` and run the dataset's whole method list on it
    (the unlearning runs on one thread)."""
    os.environ["UNLEARN_FP_PERTURB"] = str(level)
    import torch

    torch.set_num_threads(threads)
    from unlearn.methods import list_methods, pretrain_l1, resolve_paras
    from unlearn.methods.entries import entry_replay, entry_settings
    from unlearn.stages.forget import unlearn_run
    from unlearn.stages.pretrain import pretrain
    from unlearn.store.setting import Setting

    cfg = config.dataset_config(dataset)
    base = dict(net=cfg["net"], dataset=dataset, classes=cfg["classes"], forget_class=cfg["forget_class"],
                ood_classes=list(cfg["ood_classes"]), data_root=config.DATA_ROOT,
                log_root=str(Path(root) / f"{dataset}-s{seed}-p{level}-t{threads}"))
    t0 = time.perf_counter()
    pre = Setting(**base, pretrain_seed=seed)
    models = {}
    for l1 in sorted({0.0} | {pretrain_l1(m, dataset) for m in list_methods()}):
        r = done(pre.pretrain_dir(l1) / "results.json") or pretrain(
            pre, lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"], l1=l1, device="cpu", progress=False)
        models[l1] = {k: r[k] for k in ("best_epoch", "best_test_acc", "best_retain_train_acc")}
    torch.set_num_threads(1)
    setting = Setting(**base, seed=0, pretrain_seed=seed)
    rows = []
    for entry in config.MU_METHOD_LIST[dataset]:
        method, p1, p2, *rest = entry
        opts = rest[0] if rest else {}
        options, _, extras = entry_settings(method, opts)
        r = done(setting.stage_dir("unlearning", method, *resolve_paras(method, p1, p2), extras) / "results.json") \
            or unlearn_run(setting, method=method, para1=p1, para2=p2, options=options,
                           replay=entry_replay(method, opts), extras=extras, device="cpu", progress=False)
        m = r.get("metrics") or {}
        rows.append({"method": method, "status": r["status"], "d_f": m.get("d_f"), "d_t": m.get("d_t")})
    return {"seed": seed, "level": level, "threads": threads, "pretrained": models, "rows": rows, "seconds": time.perf_counter() - t0}


def report(dataset: str, results: list[dict]) -> str:
    """The worst case over the models, per entry, as a markdown table."""
    names = [f"s{r['seed']}/p{r['level']}" + (f"/t{r['threads']}" if r["threads"] != 1 else "") for r in results]
    lines = [f"{dataset}: worst d_f / d_t over {len(results)} pretrained models ({', '.join(names)}; "
             "s = pretraining seed, p = UNLEARN_FP_PERTURB level, t = pretraining threads if not 1), "
             "unlearning seed 0", "",
             "| model | kept epoch | test acc | retain-train acc | seconds |", "|---|---|---|---|---|"]
    for n, r in zip(names, results):
        p = r["pretrained"]["0.0" if "0.0" in r["pretrained"] else 0.0]
        lines.append(f"| {n} | {p['best_epoch']} | {100 * p['best_test_acc']:.2f} | "
                     f"{100 * p['best_retain_train_acc']:.2f} | {r['seconds']:.0f} |")
    lines += ["", "| method | worst d_f | worst d_t | worst d_t drop | on target on all | OFF_TARGET |",
              "|---|---|---|---|---|---|"]
    known = config.OFF_TARGET.get(dataset, {})
    for i, row in enumerate(results[0]["rows"]):
        per = [r["rows"][i] for r in results]
        bases = [next(x for x in r["rows"] if x["method"] == "baseline")["d_t"] for r in results]
        if any(p["status"] != "ok" for p in per):
            lines.append(f"| {row['method']} | {'; '.join(p['status'] for p in per)} | | | no | "
                         f"{'yes' if row['method'] in known else ''} |")
            continue
        drop = max(b - p["d_t"] for b, p in zip(bases, per))
        df = max(p["d_f"] for p in per)
        ok = row["method"] == "baseline" or (df <= TARGET_DF and drop <= TARGET_DT_DROP)
        lines.append(f"| {row['method']} | {df:.1f} | {min(p['d_t'] for p in per):.1f} | {drop:.1f} | "
                     f"{'yes' if ok else 'no'} | {'yes' if row['method'] in known else ''} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="Digits", choices=["Digits", "FashionMNIST"])
    p.add_argument("--models", nargs="+", default=["0:0", "1:0", "2:0", "0:1"],
                   help="pretrained models as seed:level[:threads] (level: UNLEARN_FP_PERTURB; threads: 1)")
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--out", required=True, help="scratch folder (log files of every model, the report)")
    args = p.parse_args(argv)
    models = [(*(int(x) for x in m.split(":")), 1)[:3] for m in args.models]
    with ProcessPoolExecutor(args.jobs) as pool:
        results = list(pool.map(one_model, *zip(*[(args.dataset, *m, args.out) for m in models])))
    out = Path(args.out)
    (out / f"{args.dataset}.json").write_text(json.dumps(results, indent=1, default=str))
    text = report(args.dataset, json.loads(json.dumps(results, default=str)))
    (out / f"{args.dataset}.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
