"""Shared benchmarks: tasks that compare the paper packages side by side, the leaderboard, and
performance benchmarks (`benchmarks/perf/`). May import every package."""
