//! One read of the queue: every packet waiting is decided, then every
//! verdict is sent (the kernel holds the packets meanwhile; the `nfq`
//! crate has no batch verdict, so one message per packet, all after the
//! batch's decisions). A drop adds a REJECT record with the rule.

use std::io;
use std::sync::Arc;

use flowlogd_plugin_api::Direction;

use super::queue::{EnforcementQueue, QueueCounters};
use crate::eni::EniRegistry;
use crate::flows::{Clock, FlowTable};
use crate::model::IfIndex;
use crate::packet;
use crate::security_groups::{FirstPacket, Policy};

/// Packets decided per read at most, so that other sources get their turn;
/// the loop comes back at once when more wait.
const MAX_BATCH: usize = 256;

/// The netfilter hooks the table queues at.
const NF_INET_PRE_ROUTING: u8 = 0;
const NF_INET_POST_ROUTING: u8 = 4;

/// Counters since start.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictStats {
    /// Packets read from the queue.
    pub packets: u64,
    pub accepted: u64,
    pub dropped: u64,
    /// Accepted without a decision: the interface is no covered ENI's (the
    /// set lags the registry a moment).
    pub not_covered: u64,
    /// Dropped: headers that could not be read.
    pub unreadable: u64,
    /// Sending a verdict failed (the kernel then applies the queue's
    /// bypass or drops when the packet times out).
    pub verdict_errors: u64,
}

/// The queue and the policy it enforces.
pub struct Enforcer {
    queue: EnforcementQueue,
    policy: Arc<Policy>,
    stats: VerdictStats,
}

/// What one read did.
pub struct DrainResult {
    /// The batch was full: more may wait.
    pub more_pending: bool,
}

impl Enforcer {
    pub fn new(queue: EnforcementQueue, policy: Arc<Policy>) -> Enforcer {
        Enforcer {
            queue,
            policy,
            stats: VerdictStats::default(),
        }
    }

    pub fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.queue.as_raw_fd()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn stats(&self) -> VerdictStats {
        self.stats
    }

    pub fn queue_counters(&self) -> Option<QueueCounters> {
        self.queue.counters()
    }

    /// A reload: new connections are decided by `policy` from now on;
    /// established ones keep their conntrack mark.
    pub fn set_policy(&mut self, policy: Arc<Policy>) {
        self.policy = policy;
    }

    /// A reload that changed the queue number or on_daemon_down.
    ///
    /// # Errors
    /// The new queue cannot be bound.
    pub fn rebind(&mut self, number: u16) -> io::Result<()> {
        self.queue.rebind(number)
    }

    pub fn queue_number(&self) -> u16 {
        self.queue.number()
    }

    /// Reads what waits (at most [`MAX_BATCH`]), decides, then answers.
    pub fn drain<C: Clock>(
        &mut self,
        registry: &EniRegistry,
        table: &mut FlowTable<C>,
    ) -> DrainResult {
        let mut batch = Vec::new();
        while batch.len() < MAX_BATCH {
            match self.queue.queue.recv() {
                Ok(mut msg) => {
                    self.stats.packets += 1;
                    self.decide(registry, table, &mut msg);
                    batch.push(msg);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::error!("nfqueue {}: read failed: {e}", self.queue.number());
                    break;
                }
            }
        }
        let more_pending = batch.len() == MAX_BATCH;
        for msg in batch {
            if let Err(e) = self.queue.queue.verdict(msg) {
                self.stats.verdict_errors += 1;
                log::debug!("nfqueue: verdict failed: {e}");
            }
        }
        DrainResult { more_pending }
    }

    fn decide<C: Clock>(
        &mut self,
        registry: &EniRegistry,
        table: &mut FlowTable<C>,
        msg: &mut nfq::Message,
    ) {
        let (direction, ifindex) = match msg.get_hook() {
            NF_INET_PRE_ROUTING => (Direction::In, msg.get_indev()),
            NF_INET_POST_ROUTING => (Direction::Out, msg.get_outdev()),
            _ => (Direction::In, 0),
        };
        let eni = (ifindex != 0)
            .then(|| registry.by_ifindex(IfIndex(ifindex)))
            .flatten()
            .filter(|eni| self.policy.covers(&registry.ids(*eni).eni_id));
        let Some(eni) = eni else {
            self.stats.not_covered += 1;
            msg.set_verdict(nfq::Verdict::Accept);
            return;
        };
        let headers = match packet::parse(msg.get_payload()) {
            Ok(h) => h,
            Err(e) => {
                self.stats.unreadable += 1;
                log::debug!("nfqueue: unreadable packet, dropped: {e}");
                msg.set_verdict(nfq::Verdict::Drop);
                return;
            }
        };
        let first = FirstPacket {
            direction,
            protocol: headers.protocol,
            src: headers.src,
            dst: headers.dst,
            src_port: headers.src_port,
            dst_port: headers.dst_port,
        };
        let decision = self.policy.decide(&registry.ids(eni).eni_id, &first);
        if decision.accept {
            self.stats.accepted += 1;
            // The table's first rule moves the mark into the connection.
            msg.set_nfmark(decision.rule.mark);
            msg.set_verdict(nfq::Verdict::Repeat);
        } else {
            self.stats.dropped += 1;
            msg.set_verdict(nfq::Verdict::Drop);
            table.add_reject(
                eni,
                direction,
                headers.tuple(),
                1,
                headers.ip_len,
                Some(&decision.rule.name),
                headers.aws_tcp_flags(),
            );
        }
    }
}
