//! What the registry has for the event loop to act on: ENIs whose flows
//! are over, MACs to ask the metadata service about. Queued as the
//! registry learns them, taken by the loop when it gets to them.

use super::index::EniIndex;
use crate::model::MacAddr;

#[derive(Default)]
pub(super) struct LoopQueues {
    /// ENIs that lost their interface since the loop last asked: the loop
    /// closes their flows.
    detached: Vec<EniIndex>,
    /// MACs to ask the service about, for the loop to hand to the worker.
    metadata_requests: Vec<MacAddr>,
}

impl LoopQueues {
    pub(super) fn detached(&mut self, eni: EniIndex) {
        self.detached.push(eni);
    }

    pub(super) fn request_metadata(&mut self, mac: MacAddr) {
        self.metadata_requests.push(mac);
    }

    pub(super) fn take_detached(&mut self) -> Vec<EniIndex> {
        std::mem::take(&mut self.detached)
    }

    pub(super) fn take_metadata_requests(&mut self) -> Vec<MacAddr> {
        std::mem::take(&mut self.metadata_requests)
    }
}
