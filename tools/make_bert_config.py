"""Write a BERT-base-shaped model folder (config + MiniLM's uncased WordPiece tokenizer, no
weights) for benchmarks: `model.text.path=DIR model.text.pretrained=false` builds a
randomly initialised BERT-base, the shape of Bio_ClinicalBERT, without any download.

    python tools/make_bert_config.py /tmp/bert_base [TOKENIZER_FOLDER]
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from transformers import BertConfig

from kgvlp.models.text import default_text_model_path


def main(out: str, tokenizer_source: str | None = None) -> None:
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
               intermediate_size=3072, max_position_embeddings=512).save_pretrained(folder)
    source = Path(tokenizer_source) if tokenizer_source else default_text_model_path()
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(source / name, folder / name)
    print(f"BERT-base config and tokenizer written to {folder}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
