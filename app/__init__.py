"""smartmeter: read a home's digital electricity meter, switch relays, keep the data."""

__version__ = "0.1.0"
