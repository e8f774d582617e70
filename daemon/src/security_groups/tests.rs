//! `decide` against the semantics of an Alibaba Cloud security group.
