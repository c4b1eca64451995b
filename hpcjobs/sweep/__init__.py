"""Sweep support: search-space sampling, early-termination policies, bayesian sampling."""
