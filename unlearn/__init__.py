"""The toolkit's shared package: stages, methods and their plumbing.

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
