"""Voucher service: Startup vouchers for business-support services inside a cluster."""
