"""batchgpt: answer every prompt in a JSONL file through chatgpt.es, crash-safe and resumable."""
