//! The flow table and capture windows (pure logic; time comes from an injected clock).
