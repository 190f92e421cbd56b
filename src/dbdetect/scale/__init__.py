"""Runs larger than one process: Ray Data."""
