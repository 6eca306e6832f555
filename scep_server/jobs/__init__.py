"""Background work: the tasks (tasks.py), the worker threads that run them (worker.py) and the locks that
elect one runner for each singleton task among every process sharing the store (locks.py)."""
