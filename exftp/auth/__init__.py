"""Built-in authenticators."""
