"""Pure cost: prices, the capacity tariff, projections and comparison (numbers in, money out)."""
