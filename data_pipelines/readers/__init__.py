"""Readers of the published dataset layouts (Market-1501, DukeMTMC-reID,
CUHK03, VIPeR, CAVIAR4REID); each returns a `records.Benchmark` and reads
the user's folder without changing it."""
