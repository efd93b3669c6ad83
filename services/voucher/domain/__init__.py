"""The voucher domain: pure rules and deciders, no I/O."""
