//! The ENIs: who each is (config and metadata service), which interface
//! stands for it and which addresses it owns (rtnetlink), and what the
//! loop must act on. Which flow log instances capture an ENI is
//! `crate::instances`' to decide, from the ids and [`Visibility`] given
//! here.

mod address_book;
mod events;
mod identity;
mod index;
mod registry;
#[cfg(test)]
mod tests;

pub use identity::Visibility;
pub use index::{EniError, EniIndex};
pub use registry::{CapturedBy, EniRegistry};
