"""Reference implementations the project is checked against, never imported
by the library: PyTorch modules and a training step written from the method
description (parity tests, benchmark baselines), and a per-query
transcription of torchreid's evaluation."""
