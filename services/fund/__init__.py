"""Fund service: Investments from the public mega fund and its sub-funds."""
