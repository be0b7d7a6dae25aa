"""The fixed-shape forms that replaced boolean-mask selections and bincount compute what
the data-dependent forms computed (PRIOR's bank statistics, dead-prototype re-draws, the
generation KL), and the EMA's multi-tensor update is the per-tensor formula."""
from __future__ import annotations

from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn

from kgvlp.modules.ema import EMAModule
from kgvlp.modules.sentence_bank import SentenceBank, SentenceBankConfig, assignment_counts
from kgvlp.objectives.prototype_generation import PrototypeGeneration, PrototypeGenerationConfig
from kgvlp.objectives.sentence_prototypes import SentencePrototypes
from kgvlp.perf.syncs import count_syncs
from prior.helpers import bank_view, dims

MASK = torch.tensor([[True, True, False], [True, False, False], [False, False, False]])


def test_assignment_counts_are_the_bincount_of_the_real_sentences_choices():
    assignment = torch.randn(3, 3, 5, generator=torch.Generator().manual_seed(0)).softmax(-1)

    counts = assignment_counts(assignment, MASK, 5)

    expected = torch.bincount(assignment.argmax(-1)[MASK], minlength=5).float()
    torch.testing.assert_close(counts, expected)


def test_usage_metrics_equal_the_statistics_of_the_selected_sentences():
    generator = torch.Generator().manual_seed(1)
    sentences, bank = torch.randn(3, 3, 4, generator=generator), torch.randn(5, 4, generator=generator)
    view = bank_view(sentences, MASK, bank)

    metrics = SentencePrototypes._usage(view)

    real = view.assignment[MASK]
    mean = real.mean(0)
    assert metrics["used"] == (torch.bincount(real.argmax(-1), minlength=5) > 0).sum()
    torch.testing.assert_close(metrics["perplexity"], (-(mean * mean.log()).sum()).exp())


def test_generation_kl_is_kl_div_batchmean_over_the_real_sentences():
    torch.manual_seed(2)
    objective = PrototypeGeneration(PrototypeGenerationConfig(num_queries=3, num_layers=1, num_heads=1), dims(4))
    paired, sentences, bank = torch.randn(3, 3, 4), torch.randn(3, 3, 4), torch.randn(5, 4)

    kl = objective._kl(paired, sentences, MASK, bank)

    expected = F.kl_div((paired[MASK] @ bank.t()).log_softmax(-1), (sentences[MASK] @ bank.t()).log_softmax(-1),
                        reduction="batchmean", log_target=True)
    torch.testing.assert_close(kl, expected)


def tiny_bank(dead_after=2) -> SentenceBank:
    torch.manual_seed(3)
    bank = SentenceBank(SentenceBankConfig(size=6, dead_after=dead_after, reinit_dead=True),
                        SimpleNamespace(dims=SimpleNamespace(text_width=4, sentence_slots=3)))
    bank.idle_steps.copy_(torch.tensor([0, 5, 1, 2, 0, 9]))        # dead: 1, 3, 5
    return bank


def test_dead_prototypes_are_redrawn_from_real_sentences_and_the_rest_stay():
    bank = tiny_bank()
    before = bank.prototypes.weight.detach().clone()
    sentences = torch.randn(3, 3, 4)
    bank._sentences = (sentences, MASK)

    with count_syncs() as counts:
        bank._reinit_dead(step=7)

    after = bank.prototypes.weight.detach()
    dead = torch.tensor([False, True, False, True, False, True])
    real = sentences[MASK]
    assert counts.total == 0, counts.report()
    assert torch.equal(after[~dead], before[~dead])
    assert all(any(torch.equal(row, candidate) for candidate in real) for row in after[dead])
    assert bank.idle_steps.tolist() == [0, 0, 1, 0, 0, 0]


def test_the_redraw_is_a_function_of_the_step_and_needs_a_real_sentence():
    sentences = torch.randn(3, 3, 4)
    first, again, other = tiny_bank(), tiny_bank(), tiny_bank()
    for bank, step in ((first, 7), (again, 7), (other, 8)):
        bank._sentences = (sentences, MASK)
        bank._reinit_dead(step)
    empty = tiny_bank()
    empty._sentences = (sentences, torch.zeros_like(MASK))
    before = empty.prototypes.weight.detach().clone()

    empty._reinit_dead(step=7)

    assert torch.equal(first.prototypes.weight, again.prototypes.weight)
    assert not torch.equal(first.prototypes.weight, other.prototypes.weight)   # 3 draws from 3 sentences
    assert torch.equal(empty.prototypes.weight, before) and empty.idle_steps.tolist() == [0, 5, 1, 2, 0, 9]


def test_the_ema_update_is_the_momentum_formula_for_every_tensor():
    torch.manual_seed(4)
    online = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ema = EMAModule(online)
    with torch.no_grad():
        for param in online.parameters():
            param.add_(1.0)
        online[1].running_mean.add_(2.0)
    expected = {name: 0.9 * value + 0.1 * dict(online.named_parameters())[name].detach()
                for name, value in ema.shadow.named_buffers() if name in dict(online.named_parameters())}

    ema.update(online, momentum=0.9)

    for name, value in expected.items():
        torch.testing.assert_close(ema.shadow.get_buffer(name), value)
    assert torch.equal(ema.shadow[1].running_mean, online[1].running_mean)
