"""Shared fixtures: a tiny model (2-block ViT at 64 px, MiniLM cut to 2 layers, 32 tokens)
and tiny batches built by the real Collator from real report text.

Report text: the Indiana University chest X-ray reports shipped inside torchxrayvision
(``data/NLMCXR_reports.tgz``); a few short realistic sentences when it is not installed.
"""
from __future__ import annotations

import re
import tarfile
from pathlib import Path

import pytest
import torch

from kgvlp.config.schema import ImageEncoderConfig, ModelConfig, TextEncoderConfig
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.text import split_sentences
from kgvlp.models.text import load_tokenizer
from kgvlp.models.vlp import VLPModel
from kgvlp.objectives import REGISTRY

IMAGE_SIZE = 64
MAX_LENGTH = 32

FALLBACK_REPORTS = [
    "The heart size is normal. No focal consolidation, pleural effusion or pneumothorax.",
    "Mild cardiomegaly. Small bilateral pleural effusions with bibasilar atelectasis.",
    "Lungs are clear. Degenerative changes of the thoracic spine.",
    "Right lower lobe opacity concerning for pneumonia. No pneumothorax is seen.",
    "Stable mediastinal contours. Interval removal of the right internal jugular catheter.",
    "Hyperinflated lungs consistent with emphysema. No acute cardiopulmonary abnormality.",
]


def _iu_reports(limit: int = 16) -> list[str]:
    """The first ``limit`` IU X-ray reports with findings or impression text (streamed)."""
    try:
        import torchxrayvision
    except ImportError:
        return []
    archive = Path(torchxrayvision.__file__).parent / "data" / "NLMCXR_reports.tgz"
    if not archive.is_file():
        return []
    section = re.compile(r'<AbstractText Label="(?:FINDINGS|IMPRESSION)">([^<]*)</AbstractText>')
    reports = []
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            if not member.name.endswith(".xml"):
                continue
            text = tar.extractfile(member).read().decode("utf-8", "replace")
            body = " ".join(section.findall(text)).replace("XXXX", "")
            if len(split_sentences(body)) >= 2:
                reports.append(body)
            if len(reports) == limit:
                break
    return reports


@pytest.fixture(scope="session")
def reports() -> list[list[str]]:
    """Cleaned sentence lists of real reports (IU X-ray), or the fallback sentences."""
    texts = _iu_reports() or FALLBACK_REPORTS
    return [split_sentences(text) for text in texts]


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer(TextEncoderConfig())


def tiny_model_config(image: str = "vit_test", max_length: int = MAX_LENGTH) -> ModelConfig:
    return ModelConfig(image=ImageEncoderConfig(name=image, image_size=IMAGE_SIZE),
                       text=TextEncoderConfig(max_length=max_length, num_layers=2))


def make_model(objectives: dict, image: str = "vit_test", max_length: int = MAX_LENGTH,
               seed: int = 0) -> VLPModel:
    """A seeded tiny VLPModel with the given objective configs ({name: Config instance})."""
    torch.manual_seed(seed)
    return VLPModel(tiny_model_config(image, max_length), objectives, REGISTRY)


def make_batch(tokenizer, reports: list[list[str]], size: int = 4, max_length: int = MAX_LENGTH,
               seed: int = 0):
    """A Batch of ``size`` random grey images with the first ``size`` reports, via Collator."""
    generator = torch.Generator().manual_seed(seed)
    samples = [Sample(image=torch.randn(1, IMAGE_SIZE, IMAGE_SIZE, generator=generator),
                      sentences=reports[i % len(reports)], index=i) for i in range(size)]
    return Collator(tokenizer, max_length)(samples)


@pytest.fixture
def batch(tokenizer, reports):
    return make_batch(tokenizer, reports)
