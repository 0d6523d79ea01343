"""`lossgym agent`: a model plays LossGym sessions through the public API.

`providers` (OpenAI chat completions, Anthropic Messages) · `loop` (one session)
· `runs` (N sessions, K at a time; resume) · `transcript` (the JSONL record).
"""
