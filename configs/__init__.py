"""Shipped YAML config groups (package data): config.yaml plus one folder per group."""
