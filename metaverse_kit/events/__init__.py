"""The event model: built-in MCE schemas, URNs, aspect builders, validation and the codec."""
