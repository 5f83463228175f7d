"""A run's steps: one module per state, the driver that maps a state to its step
(``driver.STEPS``), the status comment, and the endings."""
