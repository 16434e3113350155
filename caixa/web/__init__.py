"""`caixa web`: the page. Its own process; it reads the journal and the index and calls
caixa.app, as the CLI does."""
