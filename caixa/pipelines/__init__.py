"""Steps: the work done on a file. Nothing here imports from caixa.daemon."""
