"""The worker's moving parts: fetch, dispatch to per-partition tasks, produce, checkpoint."""
