"""Load generation and measurement for the router and the simulator."""
