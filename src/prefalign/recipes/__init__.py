"""Training recipes, one readable file per algorithm: ``sft``, ``reward``, ``dpo``."""
