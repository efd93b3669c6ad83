"""`make chaos`: thousands of applications while processes are killed and the broker is
reset, then a report of what survived. See ``chaos.run``."""
