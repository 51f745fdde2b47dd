"""Live delivery: table → NOTIFY → listener → hub → each subscriber's socket."""
