//! ENI metadata from the cloud: the ECS instance metadata service, read
//! off the capture thread.

mod ecs;
mod http;
mod worker;

pub use worker::{fetch_once, MetadataUpdate, MetadataWorker};
