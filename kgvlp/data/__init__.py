"""Data: SynthCXR, readers for real datasets, the image cache, datasets and collation.

Public API::

    build_pretrain_dataset(cfg, train=True)      -> Dataset of kgvlp.data.collate.Sample | None
    build_downstream_dataset(name_or_root, split, fraction=1.0, seed=0, image_size=224)
                                                 -> DownstreamDataset of DownstreamItem
    Collator(tokenizer, max_length)              -> samples → kgvlp.data.batch.Batch
"""
from kgvlp.data.batch import Batch
from kgvlp.data.collate import Collator, Sample
from kgvlp.data.datasets import (DownstreamDataset, DownstreamItem, PretrainDataset,
                                 build_downstream_dataset, build_pretrain_dataset,
                                 collate_downstream)

# Dataset names accepted by DataConfig.dataset and `kgvlp data prepare`.
DATASETS = ("synthcxr", "mimic_cxr", "iu_xray", "chexpert", "rsna_pneumonia", "covidx",
            "siim_acr", "object_cxr")

__all__ = ["Batch", "Collator", "Sample", "DATASETS", "DownstreamDataset", "DownstreamItem",
           "PretrainDataset", "build_downstream_dataset", "build_pretrain_dataset",
           "collate_downstream"]
