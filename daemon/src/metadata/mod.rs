//! ENI metadata from the cloud: the ECS instance metadata service, read
//! off the capture thread.

mod ecs;
mod http;
mod worker;

#[cfg(test)]
pub use ecs::EcsEni;
pub use ecs::EcsSnapshot;
pub use http::HttpUrl;
pub use worker::{fetch_once, MetadataUpdate, MetadataWorker, SnapshotUpdate};
