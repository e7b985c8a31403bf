"""MLflow: what a trial and a sweep send, under which names, and where the tracking store lives."""
