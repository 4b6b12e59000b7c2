"""Discovery plugins: where the pool's endpoints come from."""
