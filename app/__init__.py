"""The composition root: the commands that wire search/ (runs) and analysis/ (tables, reports) together."""
