"""The toolkit's package: stages, methods and their plumbing, in sub-packages by role.

Layout (``tests/test_layout.py`` checks its rule on every import of every module):

* ``core/``: the training engine (the one loop), the pretraining recipe, command-line helpers
  shared by every script, errors, what a run records about its software (``runinfo``).
* ``store/``: what is on disk: a setting and its run folders (``setting``), checkpoints and atomic
  writes, run identities (``identity``), lookups among finished runs (``runs``).
* ``methods/``: the registry and the unlearning methods, the 2024 defence (``our2024``: Over-Unlearning
  & Replay around any method) beside the 2025 one (``our2025``), method-list entries (``entries``),
  one in-memory run (``run``) and the forget command line the forget and attack stages share (``cli``).
* ``evaluation/``: measuring a model: ``metrics``, output-space ``distribution``, ``lira`` (the
  likelihood-ratio membership inference of the sample-wise scenario, on arrays) and ``shadows`` (its
  cached shadow models and their per-query scores), ``sample_attack`` (the plain LiRA and the sample-wise
  Reminiscence Attack on one model), and ``rea/``
  (the Reminiscence Attack: ``relearn`` curves, their ``stats``, one model's calibrated verdicts
  (``verdict``), the replicated decision over pretrained models (``decide``, the verdict of record)
  and its simulated error rates (``calibration``), the retrained ``reference`` population, and
  ``population``: the attack's configuration, the candidate sets every model relearns and the
  references' curves). No command lines here.
* ``stages/``: the stages' command lines and their end-to-end runs (``pretrain``, ``forget``,
  ``attack``, ``distribution``), run by the top-level scripts (``forget_full_class_main_*.py`` ...).
* ``pipeline/``: run.py's job graph and its local execution (``runner``, ``batch``), SLURM (``slurm``: plan,
  submission and wait; ``slurm_job``: one job's body; ``slurm_queue``: job states and the submit lock),
  the summary tables (``summary``).
* ``tune/``: tuning a method's settings (``search``: the whole tuning, on ``folders`` (where studies
  live), ``space`` (search spaces and the settings in them), ``tasks`` (one study per method),
  ``studies`` (Optuna's storage), ``evaluator`` (a setting run in memory), ``worker`` and ``report``
  (best.json, plots, the table); ``grid``: which tuned setting a grid run gets; ``cli``: tune_method.py
  and run.py's tuning flags).
* ``study/``: the reproduction study (``plan``, ``report``, ``cli``; studies/reproduction.py) and the
  calibration of the verdict on retrained and dosed models (studies/calibration.py: ``calibration``, its
  command line, over ``calibration_rates``, the design and the pure functions on model statistics,
  ``calibration_runs``, the retrain runs, model statistics and doses, and ``calibration_findings`` and
  ``calibration_report``, the document).
* ``launcher.py``: run.py's command line, on top of everything.

Import rule (``a <- b``: ``b`` may import ``a``, never the reverse; a sub-package may import itself)::

    core <- store <- methods <- evaluation <- stages
    core, store, methods, evaluation <- pipeline <- tune <- study <- launcher

Stages are leaves: nothing in the package imports them. No module imports another module's
private name (``_x``): what crosses modules is public.

OpenMP threads that busy-wait between torch operations make small CPU models
many times slower as soon as another process shares the cores (measured on 2
cores, SmallCNN, 2 threads: 2.4 ms per step with passive waiting, 76-316 ms with
the default while another job ran). Unless the user chose a policy, waiting
threads sleep instead. That costs about 30% on an idle machine (bs-128
FashionMNIST step: 10.9 vs 8.2 ms) and is why run.py gives the attack, whose
steps are tiny, one thread. It must be set before torch loads its OpenMP
runtime, hence here.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
