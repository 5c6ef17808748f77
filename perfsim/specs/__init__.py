"""Input specifications: hardware, models, runtimes; loading and checking user data."""
