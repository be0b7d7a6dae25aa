"""Write a BERT-shaped model folder (config + MiniLM's uncased WordPiece tokenizer, no
weights) for benchmarks: `model.text.path=DIR model.text.pretrained=false` builds a
randomly initialised BERT without any download — base (12 layers, 768 wide: the shape of
Bio_ClinicalBERT) or large (24 layers, 1024 wide: issue 18's ZeRO-3 scale run).

    python tools/make_bert_config.py /tmp/bert_base [TOKENIZER_FOLDER] [--size base|large]
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from transformers import BertConfig

from kgvlp.models.text import default_text_model_path

SIZES = {"base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
         "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096)}


def main(out: str, tokenizer_source: str | None = None, size: str = "base") -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=30522, max_position_embeddings=512, **SIZES[size]).save_pretrained(folder)
    source = Path(tokenizer_source) if tokenizer_source else default_text_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    print(f"BERT-{size} config and tokenizer written to {folder}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("tokenizer", nargs="?", default=None)
    parser.add_argument("--size", choices=sorted(SIZES), default="base")
    args = parser.parse_args()
    main(args.out, args.tokenizer or None, args.size)
