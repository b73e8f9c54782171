"""Shared, stateless layer of the monorepo: cameras, metrics, dataset readers, synthetic scenes.

Nothing here holds trainable parameters or changes a checkpoint; paper packages import it, it
imports no paper package.
"""
