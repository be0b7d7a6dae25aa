"""model.text.global_pool=mean: the report vector is the mean of the real tokens' states."""
import torch

from kgvlp.config.schema import TextEncoderConfig
from kgvlp.models.text import TextEncoder


def test_mean_pool_averages_real_tokens_and_ignores_padding():
    torch.manual_seed(0)
    encoder = TextEncoder(TextEncoderConfig(num_layers=2, global_pool="mean", dropout=0.0)).eval()
    ids = torch.tensor([[101, 2045, 2003, 1037, 102, 0, 0], [101, 2053, 102, 0, 0, 0, 0]])
    mask = (ids != 0).long()

    with torch.no_grad():
        out = encoder(ids, mask)
        alone = encoder(ids[1:, :3], mask[1:, :3])  # the second text without its padding

    assert torch.allclose(out.global_vector[0], out.tokens[0, :5].mean(0), atol=1e-5)
    assert torch.allclose(out.global_vector[1], alone.global_vector[0], atol=1e-5)
