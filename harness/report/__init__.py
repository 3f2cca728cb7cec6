"""Figures and tables rebuilt from the store alone: SQL -> polars -> matplotlib."""
