//! The node write-ahead log (being built).
