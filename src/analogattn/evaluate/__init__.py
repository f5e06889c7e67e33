"""Perplexity, energy, reports and plots."""
