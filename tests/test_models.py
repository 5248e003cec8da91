"""Every registered model is tested through the registry, so new models are covered for free."""
import pytest
import torch
import torch.nn as nn

from models import canonical_model_name, get_model, list_models, register_model
from unlearn.core.errors import UsageError

NUM_CLASSES = 7


def _check(name, in_channels, size, batch=2):
    torch.manual_seed(0)
    m = get_model(name, NUM_CLASSES, in_channels=in_channels, image_size=size).eval()
    x = torch.randn(batch, in_channels, size, size)
    with torch.no_grad():
        feats = m.forward_features(x)
        logits = m(x)
    head = m.get_classifier()
    assert isinstance(head, nn.Linear)
    assert m.num_classes == NUM_CLASSES == head.out_features
    assert feats.shape == (batch, head.in_features)
    assert logits.shape == (batch, NUM_CLASSES)
    assert torch.isfinite(logits).all() and torch.isfinite(feats).all()
    torch.testing.assert_close(logits, head(feats))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels,size", [(3, 32), (1, 28)])
def test_forward_shapes(name, in_channels, size):
    _check(name, in_channels, size)


@pytest.mark.parametrize("in_channels,size", [(1, 8), (1, 28), (3, 8), (3, 64)])
def test_smallcnn_sizes(in_channels, size):
    _check("SmallCNN", in_channels, size)


@pytest.mark.parametrize("name", list_models())
def test_tiny_images_and_backward(name):
    """8x8 inputs work and one training step gives finite gradients everywhere."""
    m = get_model(name, NUM_CLASSES, in_channels=1, image_size=8).train()
    loss = nn.functional.cross_entropy(m(torch.randn(4, 1, 8, 8)), torch.arange(4))
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_expected_names():
    assert {"ResNet18", "ResNet50", "WRN28_2", "ViT", "SmallCNN"} <= set(list_models())
    assert list_models() == sorted(list_models())


def test_case_insensitive_lookup():
    assert canonical_model_name("resnet18") == "ResNet18"
    assert canonical_model_name("VIT") == "ViT"
    assert canonical_model_name("wrn28_2") == "WRN28_2"
    assert type(get_model("smallcnn", 3, in_channels=1, image_size=8)).__name__ == "SmallCNN"


@pytest.mark.parametrize("call", [lambda: get_model("foo", 10), lambda: canonical_model_name("foo")])
def test_unknown_name(call):
    with pytest.raises(UsageError) as e:
        call()
    msg = str(e.value)
    assert "foo" in msg and "\n" not in msg
    assert all(n in msg for n in list_models())


def test_register_model_duplicate_rejected():
    with pytest.raises(ValueError):
        register_model("resnet18")(lambda num_classes, **kw: nn.Linear(1, num_classes))


def test_smallcnn_memory_format_does_not_change_results():
    torch.manual_seed(0)
    a = get_model("SmallCNN", NUM_CLASSES, in_channels=1, image_size=28).eval()
    b = get_model("SmallCNN", NUM_CLASSES, in_channels=1, image_size=28, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)
