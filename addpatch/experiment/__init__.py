"""The steps of an experiment, each reading and writing the store: dataset, filter, run, labels."""
