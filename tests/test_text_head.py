"""model.text.head: the text half of the shared projection, MGCA's BatchNorm MLP or one Linear."""
import torch

from kgvlp.modules.divergence import DivergenceEncoders
from kgvlp.modules.heads import GlobalProjection, LinearProjection, SharedProjections


def test_linear_text_head_embeds_a_report_the_same_whatever_else_is_in_the_batch():
    torch.manual_seed(0)
    heads = SharedProjections(image_width=16, text_width=24, hidden_dim=32, out_dim=8, text_head="linear").train()
    report, others_a, others_b = torch.randn(1, 24), torch.randn(5, 24), torch.randn(5, 24) * 3 + 1

    in_a = heads.text(torch.cat([report, others_a]))[0]
    in_b = heads.text(torch.cat([report, others_b]))[0]

    assert isinstance(heads.text, LinearProjection) and isinstance(heads.image, GlobalProjection)
    assert torch.allclose(in_a, in_b) and torch.allclose(in_a.norm(), torch.tensor(1.0))


def test_mgca_text_head_depends_on_its_batch_in_training():
    """Why the linear head exists: BatchNorm in training mode normalises by the batch, so real
    text unlike the synthetic training reports moves (and at eval, running statistics do)."""
    torch.manual_seed(0)
    heads = SharedProjections(image_width=16, text_width=24, hidden_dim=32, out_dim=8).train()
    report, others_a, others_b = torch.randn(1, 24), torch.randn(5, 24), torch.randn(5, 24) * 3 + 1

    in_a = heads.text(torch.cat([report, others_a]))[0]
    in_b = heads.text(torch.cat([report, others_b]))[0]

    assert not torch.allclose(in_a, in_b, atol=1e-3)


def test_the_momentum_copy_has_the_same_text_head():
    from kgvlp.config import load_experiment
    from kgvlp.models.build import build_model

    cfg = load_experiment("configs/experiments/mlip_demo.yaml",
                          ["model.text.head=linear", "model.text.num_layers=1", "model.text.pretrained=false"]).config
    model = build_model(cfg)
    divergence = next(s for s in model.services.values() if isinstance(s, DivergenceEncoders))

    assert isinstance(model.projections.text, LinearProjection)
    assert isinstance(divergence.projections.shadow.text, LinearProjection)
