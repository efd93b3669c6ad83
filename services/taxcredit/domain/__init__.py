"""The taxcredit domain: pure rules and deciders, no I/O."""
