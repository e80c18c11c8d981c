"""Plain torch modules and their configs; no Kedro imports."""
