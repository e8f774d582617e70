//! flowlogd: VPC flow logs for a Linux VM from its own netfilter state.

mod eni;
mod flows;
mod model;
mod netlink;

fn main() {}
