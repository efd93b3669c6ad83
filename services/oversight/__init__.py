"""Oversight service: Read-only: live streams and dashboard for ministries, replay and verification for auditors."""
