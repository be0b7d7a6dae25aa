#!/usr/bin/env bash
# Every GPU figure of issue 18's acceptance list, on one card, written to OUTDIR:
#   1-mgca-mlip/  MGCA stack vs the plain contrastive reference (ViT-B/16 + 6-layer BERT-base,
#                 112 tokens, batch 144, bf16, torch.compile) and the MLIP stack, one process
#   2-prior/      PRIOR at the paper's settings (prior_resnet50.yaml: ResNet-50 + 12-layer
#                 BERT, 256 tokens, batch 98, bf16), stage 3 and stage 1, vs its reference
#   3-zero3/      ZeRO-3 MGCA at ViT-L/14 + BERT-large, batch 256, activation checkpointing
#   4-loader.txt  the image-cache loader with augmentation, images/s with 16 workers
#   summary.md    the Markdown tables of the three compare.json (tools/bench_table.py)
# Each `kgvlp bench compare` also runs the step under torch.cuda.set_sync_debug_mode("error")
# and counts torch.compile graph breaks. Budget: ~8 minutes on an H100 (each part has a timeout;
# a failed part is logged and the next one runs).
#
#   bash tools/gpu_bench.sh OUTDIR               device machine, repo root; wheels of
#                                                ../shared/tools/gpu-wheels.sh carried in .whl/
#   bash tools/gpu_bench.sh --cpu-smoke OUTDIR   the same parts at tiny sizes on the CPU
#   bash tools/gpu_bench.sh --check OUTDIR       load every part's configs (--dry-run), run nothing
# Environment: STEPS (8), WARMUP (3), TOKENIZER (a tokenizer folder for the BERT configs).
set -euo pipefail
MODE=gpu
case "${1:-}" in --cpu-smoke) MODE=smoke; shift ;; --check) MODE=check; shift ;; esac
[ $# -eq 1 ] || { echo "usage: bash tools/gpu_bench.sh [--cpu-smoke|--check] OUTDIR" >&2; exit 2; }
OUT=$1
PY=${PYTHON:-python3}
if [ "$MODE" = gpu ] && ! $PY -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 3)' 2>/dev/null; then
  echo "tools/gpu_bench.sh: no CUDA device is visible to torch ($PY); it measures GPU figures." >&2
  echo "  Without a GPU: bash tools/gpu_bench.sh --cpu-smoke OUTDIR (tiny sizes) or --check OUTDIR." >&2
  exit 3
fi
mkdir -p "$OUT"
if [ "$MODE" = gpu ] && [ -d .whl ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export TORCH_CUDA_ARCH_LIST=9.0 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
[ "$MODE" = gpu ] && { nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt" || true; }
$PY tools/make_bert_config.py /tmp/bert_base ${TOKENIZER:-}
$PY tools/make_bert_config.py /tmp/bert_large ${TOKENIZER:-} --size large

STEPS=${STEPS:-8} WARMUP=${WARMUP:-3}
BASE="model.text.path=/tmp/bert_base model.text.pretrained=false"
A="data.batch_size=144 trainer.precision=bf16 trainer.compile=true"
B="trainer.compile=true"
C=""
LOADER="--n 2048 --workers 16 --batch 64 --source-size 1024"
if [ "$MODE" = smoke ]; then   # tiny sizes: the same files and code paths, on the CPU
  TINY="model.image.image_size=64 model.text.path=null model.text.pretrained=true model.text.num_layers=2
        model.text.max_length=32 data.batch_size=4 trainer.precision=fp32 trainer.compile=false"
  BASE="$TINY model.image.name=vit_test"
  A="objectives.cta.hidden_dim=32 objectives.cpa.num_prototypes=8 model.services.knowledge_bank.num_categories=3"
  B="$TINY model.image.name=resnet_test model.image.projection_dim=32 model.text.projection_dim=32
     model.services.sentence_bank.size=8 objectives.prototype_generation.num_layers=1"
  BASE_B=""
  # ZeRO-3 on the CPU smoke runs ITA only (kept small; full MGCA under ZeRO-3 is tests/engine/test_grad_accum.py)
  C="$TINY model.image.name=vit_test objectives.cta.weight=0 objectives.cpa.weight=0"
  STEPS=1 WARMUP=0 LOADER="--n 16 --workers 1 --batch 8 --source-size 256"
fi
DRY=""; [ "$MODE" = check ] && DRY=--dry-run

part() {   # name, timeout seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*" | tee -a "$OUT/log.txt"
  if ! timeout "$limit" "$@" 2>&1 | tee -a "$OUT/$name.log" | grep -v '^\[20'; then
    echo "== $name FAILED (see $OUT/$name.log)" | tee -a "$OUT/log.txt"
  fi
}
COMPARE="$PY -m kgvlp.cli bench compare --steps $STEPS --warmup $WARMUP $DRY"

part 1-mgca-mlip 200 $COMPARE configs/experiments/mgca_vitb16.yaml $BASE $A as=mgca \
  --also "configs/experiments/mlip_vitb16.yaml as=mlip" --out "$OUT/1-mgca-mlip"
part 2-prior 150 $COMPARE configs/experiments/prior_resnet50.yaml ${BASE_B-$BASE} $B as=prior-stage3 \
  --also "as=prior-stage1 stage=stage1" --out "$OUT/2-prior"
part 3-zero3 150 $COMPARE configs/experiments/mgca_vitl14_zero3.yaml $C as=mgca-vitl14-zero3 --out "$OUT/3-zero3"
if [ "$MODE" != check ]; then
  part 4-loader 120 $PY tools/bench_data_cache.py $LOADER --dir /tmp/kgvlp-loader-bench
  mv "$OUT/4-loader.log" "$OUT/4-loader.txt"
  $PY tools/bench_table.py "$OUT"/*/compare.json > "$OUT/summary.md" || true
  cat "$OUT/summary.md"
fi
