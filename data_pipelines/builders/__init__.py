"""What is built from the readers' records: the seeded MLR (low-resolution)
sets with their manifest, and the synthetic demo set."""
