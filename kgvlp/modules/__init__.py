"""Shared math (contrast, Sinkhorn, pooling, cross-rank helpers) and services owned by the model."""
