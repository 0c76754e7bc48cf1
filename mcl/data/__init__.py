"""Tasks, streams and the data they are built from."""
