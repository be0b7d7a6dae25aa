"""Papers' downstream protocols rebuilt from the datasets' own files (``kgvlp eval --protocol``).

    from kgvlp.eval.protocols import build_manifests, evaluate_protocol, ProtocolOptions
    manifests = build_manifests("mgca", {"rsna": "/data/rsna"}, ProtocolOptions())

See docs/eval.md ("Paper protocols") for what each reproduces and what still differs.
"""
from kgvlp.eval.protocols.manifest import SplitManifest, Subset
from kgvlp.eval.protocols.run import PROTOCOLS, ProtocolOptions, build_manifests, evaluate_protocol

__all__ = ["PROTOCOLS", "ProtocolOptions", "SplitManifest", "Subset", "build_manifests", "evaluate_protocol"]
