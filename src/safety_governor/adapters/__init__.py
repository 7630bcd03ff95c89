"""Adapters: one integration per file, each implementing a port from ``safety_governor.ports``."""
