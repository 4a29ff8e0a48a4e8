"""What executes: a suite's cells run (here or on Ray, data-parallel under torchrun), stored
atomically with their provenance and code fingerprint, planned and tuned."""
