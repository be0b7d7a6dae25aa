"""Readers for real chest-radiograph datasets in their published layouts.

Each ``read_<name>(root, **options)`` returns a ``ReadResult`` (records + label names);
``kgvlp data prepare`` turns it into an image cache. Nothing is downloaded: see
docs/data.md for where each dataset comes from and its licence.
"""
from kgvlp.data.readers.chexpert import read_chexpert
from kgvlp.data.readers.common import LayoutError, ReadResult, Record
from kgvlp.data.readers.detection import read_covidx, read_object_cxr, read_rsna_pneumonia, read_siim_acr
from kgvlp.data.readers.iu_xray import read_iu_xray
from kgvlp.data.readers.mimic import read_mimic_cxr

READERS = {
    "mimic_cxr": read_mimic_cxr,
    "iu_xray": read_iu_xray,
    "chexpert": read_chexpert,
    "rsna_pneumonia": read_rsna_pneumonia,
    "covidx": read_covidx,
    "siim_acr": read_siim_acr,
    "object_cxr": read_object_cxr,
}

__all__ = ["READERS", "LayoutError", "ReadResult", "Record", *[f.__name__ for f in READERS.values()]]
