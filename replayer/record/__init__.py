"""Record a window of a live stack (or a live app) into a recording."""
