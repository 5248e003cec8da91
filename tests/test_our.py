"""The paper's defence as its code runs it: OUR (2025), the replay schedules, the faithful retrain, the MIA."""
import pytest
import torch

import config
from unlearn.stages.forget import unlearn_run
from unlearn.methods import get_method, list_methods, resolve_paras
from unlearn.methods.our2025 import default_layers, hook_layers, orthogonality_loss
from unlearn.methods.retrain import retrain_recipe
from unlearn.methods.our2024 import paper2024_factor, stepped_epochs
from unlearn.core.recipe import pretrain_recipe

pytestmark = pytest.mark.numerical  # outcomes of the pretrained model: CI runs them perturbed too


def recommended(method, dataset="Digits"):
    for m, p1, p2, *opts in config.MU_METHOD_LIST[dataset]:
        if m == method:
            return p1, p2, (opts[0] if opts else {})
    raise AssertionError(f"{method} missing from the {dataset} list")


# --- OUR ------------------------------------------------------------------------------------------------------


def test_our_is_one_method_in_every_list_without_a_variant():
    spec, our = get_method("OUR")
    assert our and spec.is_our and not spec.approximate
    assert "OUR_our" not in list_methods()
    assert spec.options_text and {o.name for o in spec.options} >= {"ortho_weight", "layers"}
    for dataset, entries in config.MU_METHOD_LIST.items():
        assert "OUR" in [e[0] for e in entries], dataset


def test_orthogonality_loss_known_answers():
    eye = torch.eye(4)
    assert orthogonality_loss(eye * 3).item() == pytest.approx(0.0, abs=1e-12)  # orthogonal rows, any scale
    same = torch.ones(3, 5)
    assert orthogonality_loss(same).item() == pytest.approx(1.0, rel=1e-6)  # identical rows: every cosine 1
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert orthogonality_loss(x).item() == pytest.approx(0.5, rel=1e-6)  # cos 45 deg squared, both entries
    assert orthogonality_loss(torch.randn(1, 7)).item() == 0.0  # a batch of one adds nothing
    z = torch.zeros(2, 3, requires_grad=True)  # dead activations: finite, no blow-up
    loss = orthogonality_loss(z)
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("net,shape", [("SmallCNN", (1, 8)), ("ResNet18", (3, 32)), ("ViT", (3, 32)),
                                       ("WRN28_2", (3, 32))])
def test_default_layers_exist_and_are_each_read_once(net, shape):
    from models import get_model

    model = get_model(net, 5, in_channels=shape[0], image_size=shape[1]).eval()
    names = default_layers(model)
    assert len(names) == 3 and len(set(names)) == 3
    store = {}
    handles = hook_layers(model, names, store)
    with torch.no_grad():
        model(torch.randn(2, shape[0], shape[1], shape[1]))
    for h in handles:
        h.remove()
    assert set(store) == set(names)
    assert all(v.shape[0] == 2 and v.dim() == 2 for v in store.values())
    # three different activations (the paper's code read its second layer twice)
    assert len({v.data_ptr() for v in store.values()}) == 3


def test_our_loss_reads_every_hooked_layer_once(digits, pretrained, monkeypatch):
    import unlearn.methods.our2025 as mod
    from unlearn.methods import Context

    seen = []
    real = mod.orthogonality_loss
    monkeypatch.setattr(mod, "orthogonality_loss", lambda f: seen.append(f.shape[1]) or real(f))
    model, _ = digits.load_model(digits.pretrain_dir() / "best.pth", "cpu")
    ctx = Context(model=model, data=digits.load_data("cpu"), device=torch.device("cpu"),
                  generator=torch.Generator().manual_seed(0), progress=False)
    get_method("OUR")[0].fn(ctx, 1e-3, 1)
    per_step = len(default_layers(model))
    assert len(seen) % per_step == 0 and len(seen) >= per_step
    assert len(set(seen[:per_step])) == per_step  # 1024-, 512- and 128-wide activations of SmallCNN on 8x8
    assert not any(h for m in model.modules() for h in m._forward_hooks.values())  # hooks removed


def test_unknown_layer_is_a_one_line_error():
    from models import get_model
    from unlearn.core.errors import UsageError

    with pytest.raises(UsageError, match="--opt layers: nosuch"):
        hook_layers(get_model("SmallCNN", 3, in_channels=1, image_size=8), ["nosuch"], {})


@pytest.fixture(scope="module")
def our_and_retrain(digits, pretrained):
    retrain = unlearn_run(digits, method="retrain", device="cpu", progress=False)
    p1, p2, opts = recommended("OUR")
    our = unlearn_run(digits, method="OUR", para1=p1, para2=p2, options=opts, device="cpu", progress=False)
    base = unlearn_run(digits, method="baseline", device="cpu", progress=False)
    return our, retrain, base


def test_our_forgets_on_digits_and_keeps_utility(our_and_retrain):
    our, _, base = our_and_retrain
    assert our["status"] == "ok"
    assert our["metrics"]["d_f"] <= 10
    assert our["metrics"]["d_t"] >= base["metrics"]["d_t"] - 10
    assert our["mid"]["metrics"]["d_f"] <= our["metrics"]["d_f"] + 1e-9  # replay does not bring it back
    assert our["config"]["our"] is True


def test_our_reports_phases_and_time_as_percent_of_retrain(our_and_retrain):
    our, retrain, _ = our_and_retrain
    ph = our["phases"]
    assert ph["over_seconds"] > 0 and ph["replay_seconds"] > 0
    assert our["time"] == pytest.approx(ph["over_seconds"] + ph["replay_seconds"])
    assert our["retrain_time"] == pytest.approx(retrain["time"])
    assert our["time_pct_retrain"] == pytest.approx(100 * our["time"] / retrain["time"])


# --- Replay schedules ---------------------------------------------------------------------------------------


def test_stepped_replay_is_three_two_one():
    assert stepped_epochs(6) == [(3, 1.0), (2, 0.5), (1, 0.2)]
    assert stepped_epochs(1) == [(1, 1.0)]
    assert sum(n for n, _ in stepped_epochs(11)) == 11


def test_paper2024_replay_warms_up_to_about_twice_the_lr():
    n = 50
    f = paper2024_factor(n)
    factors = [f(s) for s in range(3 * n)]
    assert factors[0] == 0.0 and factors[n] == 1.0
    assert max(factors) == pytest.approx((2 * n - 1) / n)  # the lr peaks near 2x (0.02 for lr 0.01)
    assert factors[2 * n:] == [1.0] * n


def test_replay_schedules_differ(digits, pretrained):
    from unlearn.methods import Context
    from unlearn.methods.our2024 import ReplayConfig, replay_phase

    data = digits.load_data("cpu")
    finals = {}
    for schedule in ("constant", "paper2024", "stepped"):
        model, _ = digits.load_model(digits.pretrain_dir() / "best.pth", "cpu")
        ctx = Context(model=model, data=data, device=torch.device("cpu"), generator=torch.Generator().manual_seed(0),
                      progress=False)
        finals[schedule] = torch.cat([p.detach().flatten() for p in replay_phase(
            ctx, ReplayConfig(epochs=2, lr=0.01, l1=0.0), schedule).parameters()])
    assert not torch.equal(finals["constant"], finals["paper2024"])
    assert not torch.equal(finals["constant"], finals["stepped"])


# --- retrain = the pretraining recipe ---------------------------------------------------------------------------


@pytest.mark.parametrize("dataset", sorted(config.DATASETS))
def test_retrain_default_recipe_is_the_pretraining_recipe(dataset):
    assert retrain_recipe(dataset, *resolve_paras("retrain")) == pretrain_recipe(dataset)
    assert pretrain_recipe(dataset).augment is False  # the paper's memorising regime


def test_retrain_recipe_equals_what_pretraining_ran(pretrained):
    ran = {k: pretrained["config"][k] for k in pretrain_recipe("Digits").as_dict()}
    assert retrain_recipe("Digits", *resolve_paras("retrain")).as_dict() == ran


def test_retrain_paras_override_lr_and_epochs():
    r = retrain_recipe("Digits", 0.01, 15)
    base = pretrain_recipe("Digits")
    assert (r.lr, r.epochs) == (0.01, 15) and r.milestones == (8, 12) and r.batch_size == base.batch_size
    assert retrain_recipe("Digits", 0, 0, batch_size=7, augment=True).batch_size == 7


def test_pretraining_memorises_digits(pretrained):
    assert pretrained["best_retain_train_acc"] >= 0.99


# --- entropy MIA: the paper's non-members ----------------------------------------------------------------------


def test_entropy_mia_non_members_are_all_test_data(digits, pretrained, monkeypatch):
    import unlearn.evaluation.metrics as metrics

    seen = {}

    def spy(member, nonmember, target, *, seed=0):
        seen.update(member=len(member), nonmember=len(nonmember), target=len(target))
        return 0.0

    monkeypatch.setattr(metrics, "entropy_mia", spy)
    model, _ = digits.load_model(digits.pretrain_dir() / "best.pth", "cpu")
    data = digits.load_data("cpu")
    metrics.evaluate_unlearning(model, data)
    assert seen["nonmember"] == len(data.retain_test) + len(data.forget_test)
    assert seen["member"] == len(data.retain_train) and seen["target"] == len(data.forget_train)


# --- progress bars ----------------------------------------------------------------------------------------------


def test_quick_loops_print_no_empty_progress_bars(capsys):
    from unlearn.core.engine import LoopConfig, Sized, ce_step, train_epochs

    model = torch.nn.Linear(3, 2)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    train_epochs(model, lambda e: Sized([(x[:4], y[:4]), (x[4:], y[4:])], 2), ce_step,
                 torch.optim.SGD(model.parameters(), lr=0.1), loop=LoopConfig(epochs=5, desc="t", progress=True))
    err = capsys.readouterr().err
    assert "0it" not in err and "t 1/5" not in err


def test_best_epoch_only_after_the_configured_milestone(digits, tmp_path, monkeypatch):
    """``best_from_milestone`` 2 with 4 epochs (milestones scale to 2 and 3): only epoch 4 may be kept."""
    from dataclasses import replace

    from unlearn.stages.pretrain import pretrain

    monkeypatch.setitem(config.DATASETS["Digits"], "best_from_milestone", 2)
    setting = replace(digits, log_root=str(tmp_path))
    res = pretrain(setting, lr=0.05, epochs=4, batch_size=32, l1=0.0, device="cpu", progress=False)
    assert res["config"]["milestones"] == [2, 3] and res["config"]["best_from_epoch"] == 4
    assert res["best_epoch"] == 4 and res["best_test_acc"] == res["epochs"][3]["test_acc"]
