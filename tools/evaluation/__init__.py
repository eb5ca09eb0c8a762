"""Evaluation: attribute metrics, decoding, reports and summaries; ReID and retrieval metrics."""
