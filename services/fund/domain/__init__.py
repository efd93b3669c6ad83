"""The fund domain: pure rules and deciders, no I/O."""
