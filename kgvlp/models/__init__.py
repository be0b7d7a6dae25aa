"""Encoders, the features they give objectives, and the VLPModel (``build_model``)."""
