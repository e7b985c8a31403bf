"""One trial: its configuration built against the registries (catalog), its cost, its training loop, its launch on one
or several workers, and stopping at a checkpoint when asked."""
