"""What a task is and how events change it: pure code, no I/O."""
