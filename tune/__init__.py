"""The sweep: the spec, the cells, the Ray Tune trial, the results store."""
