"""Performance checks that run anywhere: host-sync counting (syncs.py)."""
