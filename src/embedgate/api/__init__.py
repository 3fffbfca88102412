"""HTTP routes. Routes stay thin: they parse, call one service, and render."""
