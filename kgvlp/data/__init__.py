"""Data: SynthCXR, readers for real datasets, the image cache, datasets and collation.

Public API::

    build_pretrain_dataset(cfg, train=True)      -> Dataset of kgvlp.data.collate.Sample | None
    build_downstream_dataset(name_or_root, split, fraction=1.0, seed=0, image_size=224)
                                                 -> DownstreamDataset of DownstreamItem
    Collator(tokenizer, max_length)              -> samples → kgvlp.data.batch.Batch
"""
from typing import get_args

from kgvlp.config.schema import DatasetName
from kgvlp.data.batch import Batch
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.datasets import (DownstreamDataset, DownstreamItem, PretrainDataset,
                                 build_downstream_dataset, build_pretrain_dataset,
                                 collate_downstream)

# Dataset names accepted by DataConfig.dataset (its Literal) and `kgvlp data prepare`.
DATASETS = get_args(DatasetName)

__all__ = ["Batch", "Collator", "Sample", "DATASETS", "DownstreamDataset", "DownstreamItem",
           "PretrainDataset", "build_downstream_dataset", "build_pretrain_dataset",
           "collate_downstream"]
