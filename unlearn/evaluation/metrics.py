"""The paper's table metrics and the classic entropy membership attack.

``d_t``: accuracy on retain-class test data; ``d_f``: accuracy on the forget
class's training data; ``d_r``: retain training accuracy; ``forget_test``:
accuracy on the forget class's test data; ``mia``: the entropy attack of the Bad
Teacher (Chundawat et al., 2023) and SSD (Foster et al., 2024) papers, with the
paper's non-members: all test data of the in-distribution classes, retain-test and
forget-test (its ``valid_dl`` = retain-valid + forget-valid, in ``utils/metrics.py``
``get_membership_attack_prob``). All in percent, as the paper's tables.

``zrf``: the ZRF score (Chundawat et al., "Can Bad Teaching Induce Forgetting?", AAAI 2023; the
paper's ``UnLearningScore`` in ``utils/metrics.py`` of its 2025 code): 1 minus the mean
Jensen-Shannon divergence (natural log, per sample, ``batchmean``) between the model's softmax and
that of a randomly initialised model of the same architecture, on the forget class's training data.
1 means the model answers like a random one on the forget set; a model identical to the random one
scores exactly 1, and the floor is 1 - ln 2 = 0.307. Deviation: both models are in eval mode (the
paper's random teacher stays in train mode, so its BatchNorm layers use each batch's statistics and
the score depends on the batch size); the random model is seeded by the setting's seed, so every
method of a setting is scored against the same one.

Sample-wise (the paper's 2025 scenario, :meth:`datasets.splits.SplitData.with_forget_samples`): the
same names over that split: ``d_f`` on the forgotten samples, ``d_r`` on the other training samples,
``d_t`` on every in-distribution test sample; there is no ``forget_test``.
"""
from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..core.engine import accuracy, predict


def entropy(logits: torch.Tensor) -> np.ndarray:
    """Shannon entropy of the softmax of each row (none for no rows)."""
    if logits.numel() == 0:
        return np.zeros(0)
    logp = torch.log_softmax(logits.float(), dim=1)
    return (-(logp.exp() * logp).sum(1)).cpu().numpy()


def entropy_mia(member: np.ndarray, nonmember: np.ndarray, target: np.ndarray, *, seed: int = 0) -> float:
    """Fraction of ``target`` entropies classified "member".

    A logistic regression on entropy is fitted with member = 1 (retain-train)
    and non-member = 0 (test data), classes balanced by weighting; it is then applied
    to the forget-train entropies. Identical member and non-member distributions
    give about 0.5 (the classifier has nothing to learn).
    """
    x = np.concatenate([member, nonmember]).reshape(-1, 1)
    y = np.concatenate([np.ones(len(member)), np.zeros(len(nonmember))])
    clf = LogisticRegression(class_weight="balanced", random_state=seed)
    clf.fit(x, y)
    return float(clf.predict(np.asarray(target).reshape(-1, 1)).mean())


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon divergence (natural log) between the rows of two probability matrices."""
    p, q = p.double(), q.double()
    m = (p + q) / 2

    def kl(a):  # KL(a || m), 0 log 0 = 0
        return torch.where(a > 0, a * (a.clamp_min(1e-300).log() - m.clamp_min(1e-300).log()), 0.0).sum(1)

    return 0.5 * kl(p) + 0.5 * kl(q)


def zrf_score(model: torch.nn.Module, random_model: torch.nn.Module, x: torch.Tensor) -> float:
    """ZRF: 1 - mean over ``x`` of JS(softmax(model), softmax(random_model)); NaN for no samples."""
    if len(x) == 0:
        return float("nan")
    p = torch.softmax(predict(model, x).double(), 1)
    q = torch.softmax(predict(random_model, x).double(), 1)
    return float(1 - js_divergence(p, q).mean())


def evaluate_unlearning(model: torch.nn.Module, data, *, seed: int = 0,
                        random_model: torch.nn.Module | None = None) -> dict:
    """All per-run metrics of the paper's table (percent), and ``zrf`` when ``random_model`` is given."""
    retain_train, forget_train, _ = data.sets(True)
    retain_test, forget_test, _ = data.sets(False)
    ent = {name: entropy(predict(model, s.x)) for name, s in
           (("retain_train", retain_train), ("retain_test", retain_test), ("forget_test", forget_test),
            ("forget_train", forget_train))}
    nonmember = np.concatenate([ent["retain_test"], ent["forget_test"]])
    return {
        "d_t": 100 * accuracy(model, retain_test),
        "d_f": 100 * accuracy(model, forget_train),
        "d_r": 100 * accuracy(model, retain_train),
        **({} if getattr(data, "sample_wise", False) else {"forget_test": 100 * accuracy(model, forget_test)}),
        "mia": 100 * entropy_mia(ent["retain_train"], nonmember, ent["forget_train"], seed=seed),
        **({"zrf": zrf_score(model, random_model, forget_train.x)} if random_model is not None else {}),
    }
