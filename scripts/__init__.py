"""Command-line scripts (benchmarks, experiment runner, summaries, export): ``uv run python -m scripts.<name>``.

The library (engine, evaluation, inference) lives in ``tools``, the video application in ``cctv``; nothing
in either imports a script.
"""
