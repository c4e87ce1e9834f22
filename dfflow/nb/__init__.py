"""The northbound database: the store (`store.NbApi`) and the bus (`bus.Subscriber`)."""
