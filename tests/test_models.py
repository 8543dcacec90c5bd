import pytest
import torch

from fplib.features import FrontEnd
from fplib.models.nafp import NAFP, DivideAndEncode, NAFPSettings
from fplib.models.registry import build_model, model_names, n_parameters, register, unregister


def test_nafp_matches_the_published_parameter_count_shape_and_norm():
    model, settings = build_model("nafp")
    assert n_parameters(model) == 16_939_008
    assert settings["width"] == 1.0 and settings["emb_dim"] == 128
    with torch.no_grad():
        z = model(torch.randn(3, 1, 256, 32))
    assert z.shape == (3, 128) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=1), torch.ones(3))


def test_encoder_reduces_to_1024_numbers():
    model, _ = build_model("nafp")
    with torch.no_grad():
        h = model.encoder(torch.randn(1, 1, 256, 32))
    assert h.shape == (1, 1024, 1, 1)


def test_small_variant_and_registry():
    small, s = build_model("nafp_small")
    assert s["width"] == 0.25 and n_parameters(small) < n_parameters(build_model("nafp")[0]) / 8
    assert {"nafp", "nafp_small"} <= set(model_names())
    with pytest.raises(ValueError, match="unknown model"):
        build_model("resnet")


def test_a_model_registered_for_a_test_is_unregistered_after_it():
    assert "test_tiny" not in model_names()
    try:
        register("test_tiny", lambda fe=FrontEnd(), **kw: NAFP(NAFPSettings(width=0.125), fe=fe))
        assert "test_tiny" in model_names()
        assert isinstance(build_model("test_tiny")[0], NAFP)
    finally:
        unregister("test_tiny")  # the registry is global: later tests must not see the test model
    assert "test_tiny" not in model_names()
    with pytest.raises(ValueError, match="unknown model"):
        build_model("test_tiny")


def test_divide_and_encode_equals_separate_groups():
    """The batched head computes exactly what 128 separate 8 -> 32 -> 1 modules would."""
    torch.manual_seed(0)
    head = DivideAndEncode(1024, 128, 32)
    x = torch.randn(5, 1024)
    ref = torch.stack(
        [
            torch.nn.functional.elu(x[:, 8 * g : 8 * g + 8] @ head.w1[g] + head.b1[g]) @ head.w2[g] + head.b2[g]
            for g in range(128)
        ],
        dim=1,
    )
    torch.testing.assert_close(head(x), ref, atol=1e-5, rtol=1e-5)


def test_gradients_flow_and_batch_independent():
    model, _ = build_model("nafp_small")
    x = torch.randn(4, 1, 256, 32)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x)[:2], model(x[:2]), atol=1e-5, rtol=1e-4)
    model.train()
    model(x).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_the_registry_is_data_and_imports_no_torch():
    """The command line lists the variants and their training settings without torch: the registry names
    each factory and objective by import path, imported when the variant is first built."""
    import subprocess
    import sys

    from fplib.models.registry import BUILTIN, kind_of, loss_name, variant

    code = (
        "import sys\nfrom fplib.models import registry\nfrom fplib import train_config\n"
        "print(len(registry.model_names()), train_config.TrainConfig(model='attn').temperature,"
        " sorted(m for m in ('torch', 'numpy') if m in sys.modules))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == [str(len(BUILTIN)), "0.1", "[]"], r.stdout + r.stderr
    for v in BUILTIN:
        assert isinstance(v.factory, str) and isinstance(v.objective, str) and v.description and v.loss
        assert v.kind == kind_of(v.name) and variant(v.name) is v
    assert loss_name("nafp") == "NT-Xent" and loss_name("samaf_small").startswith("SAMAF")
    assert loss_name(None) == loss_name("not_registered") == "loss"
