"""Fixtures shared by every test folder. The helpers behind them live in ``kgvlp_tiny``
(a uniquely named module: each test folder has its own conftest, so ``import conftest``
would be ambiguous)."""
from kgvlp_tiny import batch, reports, tokenizer  # noqa: F401  (pytest fixtures)
