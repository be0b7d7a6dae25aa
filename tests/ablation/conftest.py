"""Registers the ``slurm`` marker (tests that start a one-node SLURM cluster)."""


def pytest_configure(config):
    config.addinivalue_line("markers", "slurm: needs a real one-node SLURM cluster (tools/slurm_local_cluster.sh; "
                                       "root); ~1–2 min")
    config.addinivalue_line("markers", "ray: starts a local Ray instance (~40 s)")
