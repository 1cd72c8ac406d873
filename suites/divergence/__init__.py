"""Batch divergence: does greedy output change with what else is in the batch? Token ids, not words."""
