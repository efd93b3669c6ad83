"""The services: voucher, taxcredit, fund (the programmes) and oversight (read-only)."""
