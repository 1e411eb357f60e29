"""Readers for data sets on disk, one module per format."""
