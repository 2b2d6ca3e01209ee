"""Channel-neutral types shared by every layer (they import nothing else of `bot`)."""
