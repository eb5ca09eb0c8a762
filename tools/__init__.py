"""Framework tools: metrics, checkpoints, results, inference, video, summaries, benchmarks."""
