//! Integration tests of the bus contract against a real bus.
