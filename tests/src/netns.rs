//! Network namespace helpers (see conntrack tests).
