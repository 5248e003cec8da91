"""What a results.json records about the software that produced it."""
import platform
import sys


def environment() -> dict:
    import numpy
    import sklearn
    import torch

    return {"python": sys.version.split()[0], "torch": torch.__version__, "numpy": numpy.__version__,
            "sklearn": sklearn.__version__, "platform": platform.platform(),
            "cuda": torch.version.cuda if torch.cuda.is_available() else None}
