"""Results to tables and figures: reads trial result folders, never the trainer's internals."""
