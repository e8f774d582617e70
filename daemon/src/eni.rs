//! The ENI registry: interfaces, their addresses and metadata, and which flow log instances capture them.
