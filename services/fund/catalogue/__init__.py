"""The fund catalogue: the mega fund, its sub-funds, their remits and committees (data only)."""
