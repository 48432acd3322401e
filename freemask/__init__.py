"""freemask."""
