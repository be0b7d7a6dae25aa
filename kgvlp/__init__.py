"""kgvlp: knowledge-augmented vision-language pretraining on chest radiographs."""


def load(path):
    """A VLPModel from an export folder (any format, see docs/export.md) or a run folder.

    Imports lazily so that ``import kgvlp`` stays fast.
    """
    from kgvlp.export import load as _load
    return _load(path)
