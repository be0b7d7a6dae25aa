"""The explicit registry of services, keyed by the name used under ``model.services``.

Each entry's ``provides`` is the ``Need`` it satisfies; one service per Need.
"""
from __future__ import annotations

from kgvlp.modules.divergence import DivergenceEncoders
from kgvlp.modules.knowledge_bank import KnowledgeBank
from kgvlp.modules.masked_view import MaskedViewService
from kgvlp.modules.mgca_words import MGCAWords
from kgvlp.modules.sentence_bank import SentenceBank
from kgvlp.modules.service import Service

SERVICES: dict[str, type[Service]] = {
    "divergence": DivergenceEncoders,
    "knowledge_bank": KnowledgeBank,
    "sentence_bank": SentenceBank,
    "masked_view": MaskedViewService,
    "mgca_words": MGCAWords,
}


def service_for(need) -> tuple[str, type[Service]] | None:
    for name, cls in SERVICES.items():
        if cls.provides == need:
            return name, cls
    return None
