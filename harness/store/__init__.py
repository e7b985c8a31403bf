"""Result folders on disk and in object stores: atomic writes, the trial folder, the suite lock and the trial index.
Imports only harness.core."""
