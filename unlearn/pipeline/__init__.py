"""run.py's job graph and its execution: locally (runner, batch), on SLURM (slurm), summary tables."""
