"""taxlot-svc: the book of record of cash, positions and tax lots."""
