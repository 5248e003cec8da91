"""The toolkit's shared package: stages, methods and their plumbing.

OpenMP threads that busy-wait between torch operations make small CPU models
30-100x slower as soon as another process shares the cores (measured: 2.4 ms
per SmallCNN step with passive waiting, 76-316 ms with the default). Unless the
user chose a policy, waiting threads sleep instead; this must be set before
torch loads its OpenMP runtime, hence here.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
