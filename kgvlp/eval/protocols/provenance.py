"""What every protocol result row and table is tagged with: protocol, split hash, seeds,
config hash, kgvlp version and commit."""
from __future__ import annotations

import dataclasses
import hashlib
import json

from kgvlp.eval.protocols.manifest import SplitManifest


def provenance() -> dict:
    from kgvlp.export import git_commit, kgvlp_version
    return {"kgvlp_version": kgvlp_version(), "commit": git_commit()}


def config_hash(spec, run_config, options: dict) -> str:
    """sha256 over what fixes a number besides the splits: the task recipe, the eval options
    and the trained run's experiment config."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return dataclasses.asdict(value)
        return value
    body = {"spec": plain(spec), "options": options, "run_config": plain(run_config)}
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


def tags(manifest: SplitManifest, seeds, cfg_hash: str, prov: dict) -> dict:
    return {"protocol": manifest.protocol, "split_hash": manifest.content_hash, "config_hash": cfg_hash,
            "seeds": ",".join(str(s) for s in seeds), **prov}


def tag_line(tag: dict) -> str:
    return (f"Protocol {tag['protocol']} · split manifest sha256 {tag['split_hash'][:16]} · seeds "
            f"[{tag['seeds']}] · config sha256 {tag['config_hash'][:16]} · kgvlp {tag['kgvlp_version']} "
            f"(commit {tag['commit']})")
