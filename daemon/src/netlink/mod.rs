//! One module per netlink family. Messages are turned into the plain structs
//! of `crate::model` here; no netlink type leaves this module.
