"""Services: each subscribes to the bus, calls the pure core, writes through the store."""
