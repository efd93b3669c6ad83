"""The oversight domain: pure rules and deciders, no I/O."""
