"""Spectral Training: Kedro pipelines that turn multispectral and hyperspectral cubes into
trained, evaluated vision models."""

__version__ = "0.1.0"
