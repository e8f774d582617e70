//! The flowlogd sink plugin API.
//!
//! A sink is a `cdylib` that exports one function, `flowlogd_sink_descriptor`,
//! returning a [`abi::FfiDescriptor`] whose first fields are the ABI version
//! and the struct size. The C contract is `include/flowlogd_sink.h`; Rust
//! plugins implement [`Sink`] and call [`export_sink!`].
//!
//! A sink's `fields = [...]` option (checked by the daemon before the
//! plugin sees it) is a [`FieldList`]: a plugin gets it with
//! [`Options::field_list`] and writes records with
//! [`format::write_text_fields`] / [`format::write_json_fields`].

pub mod abi;
pub mod fields;
pub mod format;
pub mod host_port;
pub mod record;
pub mod sink;

pub use fields::{Field, FieldList, FieldListError};
pub use record::{
    Action, Direction, EniIds, FlowExtras, FlowFields, FlowRecord, LogStatus, RecordView,
    RECORD_VERSION,
};
pub use sink::{ErrorKind, FlushFlags, Host, HostLog, Options, Sink, SinkError};
