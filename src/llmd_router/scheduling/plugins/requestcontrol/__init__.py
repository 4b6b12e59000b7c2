"""Request control: data producers and admitters that run around scheduling."""
