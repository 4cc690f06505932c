"""Vehicle–meter links: which charger's meter a vehicle draws its AC from, over time."""
