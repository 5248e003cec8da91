"""What a results.json records about the software that produced it, and the floating-point
perturbation it ran under (``UNLEARN_FP_PERTURB``, part of every run's identity)."""
import os
import platform
import sys

import numpy
import torch

from .errors import UsageError

FP_PERTURB_ENV = "UNLEARN_FP_PERTURB"


def environment() -> dict:
    import sklearn  # lazy: start-up time

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}


def fp_perturbation() -> int:
    """The level of ``UNLEARN_FP_PERTURB`` (0 or unset: off); a bad value is a :class:`UsageError`.

    Level k > 0 moves the initial weights of every freshly built model by one ulp in a pattern drawn from
    seed k (:func:`unlearn.core.engine.perturb_init`): the rounding difference another CPU makes, which
    training then amplifies. Tests and defaults are checked both ways, so that they hold on any machine.
    """
    raw = os.environ.get(FP_PERTURB_ENV, "").strip()
    if raw in ("", "0"):
        return 0
    if not raw.isdigit():
        raise UsageError(f"{FP_PERTURB_ENV}={raw!r} is not a whole number >= 0; set it to 0 (off) or 1, 2, ... "
                         "(another floating-point path), or unset it")
    return int(raw)
