//! Integration tests against real daemons (containerd, dockerd, a registry) started by
//! scripts/test.sh on private sockets. One binary, one module per area.

mod arch;
mod collect;
mod corpus;
mod deliver;
mod docker;
mod docker25;
mod export;
mod field;
mod guide;
mod harness;
mod import;
mod kind;
mod layout;
mod layout_export;
mod leftovers;
mod list;
mod mirror;
mod native;
mod node_lock;
mod pack;
mod podman;
mod prune;
mod push;
mod push_archives;
mod registry;
mod reliability;
mod selfcheck;
mod signatures;
mod signing;
mod since;
mod text_log;
mod troubleshooting;
mod versions;
mod whole;
mod wording;
