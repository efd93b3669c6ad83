"""Tax-credit service: Certification of national strategic technology, M&A and investment tax credits."""
