#!/usr/bin/env bash
# The GPU benchmark of the anchor setting: ViT-B/16 + BERT-base cut to 6 layers,
# 112 tokens, batch 144, bf16 — full MGCA stack vs a plain CLIP (ITA-only) step, eager and
# torch.compile, measured side by side in one process. Run on the device machine from the
# repo root with the wheels of ../shared/tools/gpu-wheels.sh carried in .whl/.
set -euo pipefail
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
fi
export TORCH_CUDA_ARCH_LIST=9.0 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv || true
python3 tools/make_bert_config.py /tmp/bert_base ${TOKENIZER:-}
EXP=${EXP:-configs/experiments/mgca_vitb16.yaml}
O="model.text.path=/tmp/bert_base model.text.pretrained=false data.batch_size=${BATCH:-144} trainer.precision=bf16 ${EXTRA:-}"
CLIP="objectives.cta.weight=0 objectives.cpa.weight=0"
python3 -m kgvlp.cli bench train "$EXP" $O --steps ${STEPS:-10} --warmup ${WARMUP:-3} \
  --baseline "$CLIP" \
  --baseline "trainer.compile=true" \
  --baseline "trainer.compile=true $CLIP" \
  --baseline "trainer.compile=true trainer.precision=bf16-weights"
